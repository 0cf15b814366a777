{
  "type": "record",
  "name": "DecisionDegraded",
  "namespace": "opal.events",
  "doc": "Decision quality fell below a threshold over a window.",
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
      "name": "scope",
      "type": "string",
      "doc": "What degraded: a category or an agent; the message key."
    },
    {
      "name": "client_name",
      "type": [
        "null",
        "string"
      ],
      "default": null,
      "doc": "Client concerned, when the degradation is per client."
    },
    {
      "name": "metric",
      "type": "string",
      "doc": "The metric that crossed its threshold (e.g. acceptance_rate)."
    },
    {
      "name": "observed",
      "type": "double",
      "doc": "Observed value of the metric over the window."
    },
    {
      "name": "threshold",
      "type": "double",
      "doc": "Threshold it fell below."
    },
    {
      "name": "window_start",
      "type": {
        "type": "long",
        "logicalType": "timestamp-millis"
      },
      "doc": "Start of the event-time window (inclusive)."
    },
    {
      "name": "window_end",
      "type": {
        "type": "long",
        "logicalType": "timestamp-millis"
      },
      "doc": "End of the event-time window (exclusive)."
    },
    {
      "name": "sample_size",
      "type": "long",
      "doc": "Number of samples in the window."
    },
    {
      "name": "reason",
      "type": "string",
      "doc": "Why the alert was raised, for people."
    }
  ]
}
ÿ{
  "type": "record",
  "name": "DecisionDegraded",
  "namespace": "opal.events",
  "doc": "Decision quality fell below a threshold over a window.",
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
      "name": "scope",
      "type": "string",
      "doc": "What degraded: a category or an agent; the message key."
    },
    {
      "name": "client_name",
      "type": [
        "null",
        "string"
      ],
      "default": null,
      "doc": "Client concerned, when the degradation is per client."
    },
    {
      "name": "metric",
      "type": "string",
      "doc": "The metric that crossed its threshold (e.g. acceptance_rate)."
    },
    {
      "name": "observed",
      "type": "double",
      "doc": "Observed value of the metric over the window."
    },
    {
      "name": "threshold",
      "type": "double",
      "doc": "Threshold it fell below."
    },
    {
      "name": "window_start",
      "type": {
        "type": "long",
        "logicalType": "timestamp-millis"
      },
      "doc": "Start of the event-time window (inclusive)."
    },
    {
      "name": "window_end",
      "type": {
        "type": "long",
        "logicalType": "timestamp-millis"
      },
      "doc": "End of the event-time window (exclusive)."
    },
    {
      "name": "sample_size",
      "type": "long",
      "doc": "Number of samples in the window."
    },
    {
      "name": "reason",
      "type": "string",
      "doc": "Why the alert was raised, for people."
    }
  ]
}
