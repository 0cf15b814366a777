{
  "type": "record",
  "name": "DecisionGenerated",
  "namespace": "opal.events",
  "doc": "A decision with ranked recommendations was made for a client.",
  "fields": [
    {
      "name": "event_id",
      "type": "string",
      "doc": "Unique id of this event (UUID); consumers deduplicate on it."
    },
    {
      "name": "correlation_id",
      "type": "string",
      "doc": "Id shared by every event caused by the same request or workflow run."
    },
    {
      "name": "schema_version",
      "type": "int",
      "default": 1,
      "doc": "Version of this event's schema the producer wrote."
    },
    {
      "name": "timestamp",
      "type": {
        "type": "long",
        "logicalType": "timestamp-millis"
      },
      "doc": "Event time: when the fact happened, in milliseconds since the epoch (UTC)."
    },
    {
      "name": "source_system",
      "type": "string",
      "doc": "The system that produced the event."
    },
    {
      "name": "environment",
      "type": {
        "type": "enum",
        "name": "Environment",
        "symbols": [
          "development",
          "staging",
          "production"
        ],
        "doc": "Deployment environment."
      },
      "doc": "Environment the event was produced in."
    },
    {
      "name": "decision_id",
      "type": "string",
      "doc": "Id of the decision."
    },
    {
      "name": "workflow_id",
      "type": "string",
      "doc": "Workflow run that produced it."
    },
    {
      "name": "client_name",
      "type": "string",
      "doc": "Client the decision is for; the message key."
    },
    {
      "name": "model_version",
      "type": "string",
      "doc": "Version of the model that made the decision."
    },
    {
      "name": "recommendations",
      "type": {
        "type": "array",
        "items": {
          "type": "record",
          "name": "Recommendation",
          "doc": "One recommendation of a decision.",
          "fields": [
            {
              "name": "recommendation_id",
              "type": "string",
              "doc": "Id of the recommendation."
            },
            {
              "name": "category",
              "type": "string",
              "doc": "Category the recommendation belongs to."
            },
            {
              "name": "text",
              "type": "string",
              "doc": "What is recommended, for people."
            },
            {
              "name": "confidence",
              "type": "double",
              "doc": "Model confidence, 0..1."
            },
            {
              "name": "impact_score",
              "type": "double",
              "doc": "Expected impact, higher is better."
            }
          ]
        }
      },
      "doc": "The recommendations, in the model's order."
    }
  ]
}
ÿ{
  "type": "record",
  "name": "DecisionGenerated",
  "namespace": "opal.events",
  "doc": "A decision with ranked recommendations was made for a client.",
  "fields": [
    {
      "name": "event_id",
      "type": "string",
      "doc": "Unique id of this event (UUID); consumers deduplicate on it."
    },
    {
      "name": "correlation_id",
      "type": "string",
      "doc": "Id shared by every event caused by the same request or workflow run."
    },
    {
      "name": "schema_version",
      "type": "int",
      "default": 1,
      "doc": "Version of this event's schema the producer wrote."
    },
    {
      "name": "timestamp",
      "type": {
        "type": "long",
        "logicalType": "timestamp-millis"
      },
      "doc": "Event time: when the fact happened, in milliseconds since the epoch (UTC)."
    },
    {
      "name": "source_system",
      "type": "string",
      "doc": "The system that produced the event."
    },
    {
      "name": "environment",
      "type": {
        "type": "enum",
        "name": "Environment",
        "symbols": [
          "development",
          "staging",
          "production"
        ],
        "doc": "Deployment environment."
      },
      "doc": "Environment the event was produced in."
    },
    {
      "name": "decision_id",
      "type": "string",
      "doc": "Id of the decision."
    },
    {
      "name": "workflow_id",
      "type": "string",
      "doc": "Workflow run that produced it."
    },
    {
      "name": "client_name",
      "type": "string",
      "doc": "Client the decision is for; the message key."
    },
    {
      "name": "model_version",
      "type": "string",
      "doc": "Version of the model that made the decision."
    },
    {
      "name": "recommendations",
      "type": {
        "type": "array",
        "items": {
          "type": "record",
          "name": "Recommendation",
          "doc": "One recommendation of a decision.",
          "fields": [
            {
              "name": "recommendation_id",
              "type": "string",
              "doc": "Id of the recommendation."
            },
            {
              "name": "category",
              "type": "string",
              "doc": "Category the recommendation belongs to."
            },
            {
              "name": "text",
              "type": "string",
              "doc": "What is recommended, for people."
            },
            {
              "name": "confidence",
              "type": "double",
              "doc": "Model confidence, 0..1."
            },
            {
              "name": "impact_score",
              "type": "double",
              "doc": "Expected impact, higher is better."
            }
          ]
        }
      },
      "doc": "The recommendations, in the model's order."
    }
  ]
}
