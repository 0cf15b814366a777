{
  "type": "record",
  "name": "UserPreferencesUpdated",
  "namespace": "opal.events",
  "doc": "A client's recommendation preferences changed (compacted: latest per client).",
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
      "name": "client_name",
      "type": "string",
      "doc": "Client whose preferences these are; the message key."
    },
    {
      "name": "preferred_categories",
      "type": {
        "type": "array",
        "items": "string"
      },
      "doc": "Categories to boost."
    },
    {
      "name": "excluded_categories",
      "type": {
        "type": "array",
        "items": "string"
      },
      "doc": "Categories never to recommend."
    },
    {
      "name": "min_confidence",
      "type": "double",
      "doc": "Recommendations below this confidence are dropped."
    }
  ]
}
ÿ{
  "type": "record",
  "name": "UserPreferencesUpdated",
  "namespace": "opal.events",
  "doc": "A client's recommendation preferences changed (compacted: latest per client).",
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
      "name": "client_name",
      "type": "string",
      "doc": "Client whose preferences these are; the message key."
    },
    {
      "name": "preferred_categories",
      "type": {
        "type": "array",
        "items": "string"
      },
      "doc": "Categories to boost."
    },
    {
      "name": "excluded_categories",
      "type": {
        "type": "array",
        "items": "string"
      },
      "doc": "Categories never to recommend."
    },
    {
      "name": "min_confidence",
      "type": "double",
      "doc": "Recommendations below this confidence are dropped."
    }
  ]
}
