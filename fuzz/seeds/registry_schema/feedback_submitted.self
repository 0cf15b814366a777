{
  "type": "record",
  "name": "FeedbackSubmitted",
  "namespace": "opal.events",
  "doc": "A user rated a recommendation.",
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
      "name": "feedback_id",
      "type": "string",
      "doc": "Id of the feedback."
    },
    {
      "name": "decision_id",
      "type": "string",
      "doc": "Decision the recommendation belonged to."
    },
    {
      "name": "recommendation_id",
      "type": "string",
      "doc": "Recommendation rated."
    },
    {
      "name": "client_name",
      "type": "string",
      "doc": "Client who gave the feedback; the message key."
    },
    {
      "name": "rating",
      "type": "int",
      "doc": "Rating from 1 (worst) to 5 (best)."
    },
    {
      "name": "accepted",
      "type": "boolean",
      "doc": "Whether the recommendation was accepted."
    },
    {
      "name": "comment",
      "type": [
        "null",
        "string"
      ],
      "default": null,
      "doc": "Free-text comment, if any."
    }
  ]
}
ÿ{
  "type": "record",
  "name": "FeedbackSubmitted",
  "namespace": "opal.events",
  "doc": "A user rated a recommendation.",
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
      "name": "feedback_id",
      "type": "string",
      "doc": "Id of the feedback."
    },
    {
      "name": "decision_id",
      "type": "string",
      "doc": "Decision the recommendation belonged to."
    },
    {
      "name": "recommendation_id",
      "type": "string",
      "doc": "Recommendation rated."
    },
    {
      "name": "client_name",
      "type": "string",
      "doc": "Client who gave the feedback; the message key."
    },
    {
      "name": "rating",
      "type": "int",
      "doc": "Rating from 1 (worst) to 5 (best)."
    },
    {
      "name": "accepted",
      "type": "boolean",
      "doc": "Whether the recommendation was accepted."
    },
    {
      "name": "comment",
      "type": [
        "null",
        "string"
      ],
      "default": null,
      "doc": "Free-text comment, if any."
    }
  ]
}
