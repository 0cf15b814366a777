//! The services a consumer depends on. When one cannot be reached the
//! runtime pauses rather than dead-letters, and readiness says which.

/// A service the runtime depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dependency {
    Kafka,
    Redis,
    Registry,
}

impl Dependency {
    pub const ALL: [Dependency; 3] = [Dependency::Kafka, Dependency::Redis, Dependency::Registry];

    /// The `dependency` label of `opal_dependency_up` and the key in `/health/ready`.
    pub fn name(self) -> &'static str {
        match self {
            Dependency::Kafka => "kafka",
            Dependency::Redis => "redis",
            Dependency::Registry => "registry",
        }
    }
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
