{
  "type": "record",
  "name": "AgentCompleted",
  "namespace": "opal.events",
  "doc": "An agent finished its step of a workflow run.",
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
      "default": 2,
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
      "name": "workflow_id",
      "type": "string",
      "doc": "Workflow run the agent ran in; the message key."
    },
    {
      "name": "agent_id",
      "type": "string",
      "doc": "Id of the agent."
    },
    {
      "name": "offset",
      "type": "int",
      "doc": "The agent's position in the workflow (0-based)."
    },
    {
      "name": "execution_status",
      "type": {
        "type": "enum",
        "name": "ExecutionStatus",
        "symbols": [
          "success",
          "failure",
          "timeout",
          "skipped"
        ],
        "doc": "How an agent's execution ended."
      },
      "doc": "How the agent's execution ended."
    },
    {
      "name": "processing_time_ms",
      "type": "long",
      "doc": "Time the agent took, in milliseconds."
    },
    {
      "name": "agent_data",
      "type": {
        "type": "record",
        "name": "AgentData",
        "doc": "What the agent produced.",
        "fields": [
          {
            "name": "recommendations",
            "type": {
              "type": "array",
              "items": "string"
            },
            "doc": "Recommendations the agent produced."
          },
          {
            "name": "confidence_score",
            "type": "double",
            "doc": "The agent's confidence in its output, 0..1."
          }
        ]
      },
      "doc": "What the agent produced."
    },
    {
      "name": "error",
      "type": [
        "null",
        "string"
      ],
      "default": null,
      "doc": "Error message when the execution did not succeed."
    },
    {
      "name": "model_version",
      "type": [
        "null",
        "string"
      ],
      "default": null,
      "doc": "Version of the model the agent ran, when it reports one (added in version 2)."
    }
  ]
}
ÿ{
  "type": "record",
  "name": "AgentCompleted",
  "namespace": "opal.events",
  "doc": "An agent finished its step of a workflow run.",
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
      "default": 2,
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
      "name": "workflow_id",
      "type": "string",
      "doc": "Workflow run the agent ran in; the message key."
    },
    {
      "name": "agent_id",
      "type": "string",
      "doc": "Id of the agent."
    },
    {
      "name": "offset",
      "type": "int",
      "doc": "The agent's position in the workflow (0-based)."
    },
    {
      "name": "execution_status",
      "type": {
        "type": "enum",
        "name": "ExecutionStatus",
        "symbols": [
          "success",
          "failure",
          "timeout",
          "skipped"
        ],
        "doc": "How an agent's execution ended."
      },
      "doc": "How the agent's execution ended."
    },
    {
      "name": "processing_time_ms",
      "type": "long",
      "doc": "Time the agent took, in milliseconds."
    },
    {
      "name": "agent_data",
      "type": {
        "type": "record",
        "name": "AgentData",
        "doc": "What the agent produced.",
        "fields": [
          {
            "name": "recommendations",
            "type": {
              "type": "array",
              "items": "string"
            },
            "doc": "Recommendations the agent produced."
          },
          {
            "name": "confidence_score",
            "type": "double",
            "doc": "The agent's confidence in its output, 0..1."
          }
        ]
      },
      "doc": "What the agent produced."
    },
    {
      "name": "error",
      "type": [
        "null",
        "string"
      ],
      "default": null,
      "doc": "Error message when the execution did not succeed."
    },
    {
      "name": "model_version",
      "type": [
        "null",
        "string"
      ],
      "default": null,
      "doc": "Version of the model the agent ran, when it reports one (added in version 2)."
    }
  ]
}
