{
  "type": "record",
  "name": "WorkflowCompleted",
  "namespace": "opal.events",
  "doc": "A workflow run ended.",
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
      "name": "workflow_id",
      "type": "string",
      "doc": "Id of the workflow run; the message key."
    },
    {
      "name": "client_name",
      "type": "string",
      "doc": "Client (tenant) the run was for."
    },
    {
      "name": "status",
      "type": {
        "type": "enum",
        "name": "WorkflowStatus",
        "symbols": [
          "success",
          "failure",
          "cancelled"
        ],
        "doc": "How a workflow run ended."
      },
      "doc": "How the run ended."
    },
    {
      "name": "total_duration_ms",
      "type": "long",
      "doc": "Wall-clock duration of the run, in milliseconds."
    },
    {
      "name": "agents_total",
      "type": "int",
      "doc": "Number of agents that ran."
    },
    {
      "name": "agents_failed",
      "type": "int",
      "doc": "Number of agents that failed."
    }
  ]
}
ÿ{
  "type": "record",
  "name": "WorkflowCompleted",
  "namespace": "opal.events",
  "doc": "A workflow run ended.",
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
      "name": "workflow_id",
      "type": "string",
      "doc": "Id of the workflow run; the message key."
    },
    {
      "name": "client_name",
      "type": "string",
      "doc": "Client (tenant) the run was for."
    },
    {
      "name": "status",
      "type": {
        "type": "enum",
        "name": "WorkflowStatus",
        "symbols": [
          "success",
          "failure",
          "cancelled"
        ],
        "doc": "How a workflow run ended."
      },
      "doc": "How the run ended."
    },
    {
      "name": "total_duration_ms",
      "type": "long",
      "doc": "Wall-clock duration of the run, in milliseconds."
    },
    {
      "name": "agents_total",
      "type": "int",
      "doc": "Number of agents that ran."
    },
    {
      "name": "agents_failed",
      "type": "int",
      "doc": "Number of agents that failed."
    }
  ]
}
