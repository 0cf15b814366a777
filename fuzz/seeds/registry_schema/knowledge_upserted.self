{
  "type": "record",
  "name": "KnowledgeUpserted",
  "namespace": "opal.events",
  "doc": "A knowledge item was created or changed.",
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
      "name": "knowledge_id",
      "type": "string",
      "doc": "Id of the knowledge item; the message key."
    },
    {
      "name": "client_name",
      "type": "string",
      "doc": "Client the item belongs to."
    },
    {
      "name": "kind",
      "type": "string",
      "doc": "Kind of item (document, faq, policy, ...)."
    },
    {
      "name": "content_hash",
      "type": "string",
      "doc": "Hash of the item's content, to detect real changes."
    },
    {
      "name": "tags",
      "type": {
        "type": "array",
        "items": "string"
      },
      "doc": "Tags attached to the item."
    }
  ]
}
ÿ{
  "type": "record",
  "name": "KnowledgeUpserted",
  "namespace": "opal.events",
  "doc": "A knowledge item was created or changed.",
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
      "name": "knowledge_id",
      "type": "string",
      "doc": "Id of the knowledge item; the message key."
    },
    {
      "name": "client_name",
      "type": "string",
      "doc": "Client the item belongs to."
    },
    {
      "name": "kind",
      "type": "string",
      "doc": "Kind of item (document, faq, policy, ...)."
    },
    {
      "name": "content_hash",
      "type": "string",
      "doc": "Hash of the item's content, to detect real changes."
    },
    {
      "name": "tags",
      "type": {
        "type": "array",
        "items": "string"
      },
      "doc": "Tags attached to the item."
    }
  ]
}
