{
  "type": "record",
  "name": "WorkflowStarted",
  "namespace": "opal.events",
  "doc": "A workflow run began.",
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
      "name": "session_id",
      "type": "string",
      "doc": "User session the run belongs to."
    },
    {
      "name": "client_name",
      "type": "string",
      "doc": "Client (tenant) the run is for."
    },
    {
      "name": "workflow_name",
      "type": "string",
      "doc": "Name of the workflow definition."
    },
    {
      "name": "preferences",
      "type": {
        "type": "map",
        "values": "string"
      },
      "doc": "Run-time preferences passed to the workflow."
    },
    {
      "name": "estimated_duration_ms",
      "type": [
        "null",
        "long"
      ],
      "default": null,
      "doc": "Expected duration in milliseconds, if the workflow declares one; drives the stuck-workflow SLA."
    }
  ]
}
ÿ{
  "type": "record",
  "name": "WorkflowStarted",
  "namespace": "opal.events",
  "doc": "A workflow run began.",
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
      "name": "session_id",
      "type": "string",
      "doc": "User session the run belongs to."
    },
    {
      "name": "client_name",
      "type": "string",
      "doc": "Client (tenant) the run is for."
    },
    {
      "name": "workflow_name",
      "type": "string",
      "doc": "Name of the workflow definition."
    },
    {
      "name": "preferences",
      "type": {
        "type": "map",
        "values": "string"
      },
      "doc": "Run-time preferences passed to the workflow."
    },
    {
      "name": "estimated_duration_ms",
      "type": [
        "null",
        "long"
      ],
      "default": null,
      "doc": "Expected duration in milliseconds, if the workflow declares one; drives the stuck-workflow SLA."
    }
  ]
}
