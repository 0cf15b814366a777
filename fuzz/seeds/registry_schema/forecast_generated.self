{
  "type": "record",
  "name": "ForecastGenerated",
  "namespace": "opal.events",
  "doc": "A forecast for a series was produced on bucket close.",
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
      "name": "forecast_id",
      "type": "string",
      "doc": "Id of the forecast."
    },
    {
      "name": "series",
      "type": "string",
      "doc": "Series forecast (e.g. demand:<client> or latency:<agent>); the message key."
    },
    {
      "name": "model",
      "type": "string",
      "doc": "Forecasting model (e.g. holt-linear)."
    },
    {
      "name": "bucket_ms",
      "type": "long",
      "doc": "Width of a bucket, in milliseconds."
    },
    {
      "name": "generated_at",
      "type": {
        "type": "long",
        "logicalType": "timestamp-millis"
      },
      "doc": "End of the bucket whose close produced this forecast."
    },
    {
      "name": "points",
      "type": {
        "type": "array",
        "items": {
          "type": "record",
          "name": "ForecastPoint",
          "doc": "One forecast bucket.",
          "fields": [
            {
              "name": "timestamp",
              "type": {
                "type": "long",
                "logicalType": "timestamp-millis"
              },
              "doc": "Start of the forecast bucket."
            },
            {
              "name": "value",
              "type": "double",
              "doc": "Point forecast."
            },
            {
              "name": "lower",
              "type": "double",
              "doc": "Lower bound of the 80% prediction interval."
            },
            {
              "name": "upper",
              "type": "double",
              "doc": "Upper bound of the 80% prediction interval."
            }
          ]
        }
      },
      "doc": "The next buckets, oldest first."
    },
    {
      "name": "mae",
      "type": [
        "null",
        "double"
      ],
      "default": null,
      "doc": "Mean absolute error of the one-step-ahead forecasts so far, once there is one."
    }
  ]
}
ÿ{
  "type": "record",
  "name": "ForecastGenerated",
  "namespace": "opal.events",
  "doc": "A forecast for a series was produced on bucket close.",
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
      "name": "forecast_id",
      "type": "string",
      "doc": "Id of the forecast."
    },
    {
      "name": "series",
      "type": "string",
      "doc": "Series forecast (e.g. demand:<client> or latency:<agent>); the message key."
    },
    {
      "name": "model",
      "type": "string",
      "doc": "Forecasting model (e.g. holt-linear)."
    },
    {
      "name": "bucket_ms",
      "type": "long",
      "doc": "Width of a bucket, in milliseconds."
    },
    {
      "name": "generated_at",
      "type": {
        "type": "long",
        "logicalType": "timestamp-millis"
      },
      "doc": "End of the bucket whose close produced this forecast."
    },
    {
      "name": "points",
      "type": {
        "type": "array",
        "items": {
          "type": "record",
          "name": "ForecastPoint",
          "doc": "One forecast bucket.",
          "fields": [
            {
              "name": "timestamp",
              "type": {
                "type": "long",
                "logicalType": "timestamp-millis"
              },
              "doc": "Start of the forecast bucket."
            },
            {
              "name": "value",
              "type": "double",
              "doc": "Point forecast."
            },
            {
              "name": "lower",
              "type": "double",
              "doc": "Lower bound of the 80% prediction interval."
            },
            {
              "name": "upper",
              "type": "double",
              "doc": "Upper bound of the 80% prediction interval."
            }
          ]
        }
      },
      "doc": "The next buckets, oldest first."
    },
    {
      "name": "mae",
      "type": [
        "null",
        "double"
      ],
      "default": null,
      "doc": "Mean absolute error of the one-step-ahead forecasts so far, once there is one."
    }
  ]
}
