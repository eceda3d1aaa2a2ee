/// A key or value that does not follow the layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A required field is absent.
    #[error("{context}: missing field {field:?}")]
    Missing {
        /// Where (key, pool, PG).
        context: String,
        /// Which field.
        field: String,
    },
    /// A field has the wrong type or an impossible value.
    #[error("{context}: field {field:?}: {reason}")]
    Invalid {
        /// Where (key, pool, PG).
        context: String,
        /// Which field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The value as a whole has the wrong shape.
    #[error("{context}: {reason}")]
    Shape {
        /// Where.
        context: String,
        /// What is wrong.
        reason: String,
    },
}

impl LayoutError {
    pub(crate) fn invalid(context: &str, field: &str, reason: impl Into<String>) -> Self {
        LayoutError::Invalid {
            context: context.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn shape(context: &str, reason: impl Into<String>) -> Self {
        LayoutError::Shape {
            context: context.into(),
            reason: reason.into(),
        }
    }
}

/// Serde errors of one typed value, with the key they came from.
pub(crate) fn from_serde(context: &str, e: serde_json::Error) -> LayoutError {
    LayoutError::shape(context, e.to_string())
}
