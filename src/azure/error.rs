use super::Service;

/// Why a request to Azure did not give a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    #[error("failed to reach {service}: {reason}")]
    Transport { service: &'static str, reason: String },
    #[error("{service} answered {status}{}{}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default(), request_id.as_deref().map(|r| format!(", request id {r}")).unwrap_or_default())]
    Status { service: &'static str, status: u16, code: Option<String>, request_id: Option<String> },
    #[error("{service} sent an invalid response: {reason}")]
    InvalidResponse { service: &'static str, reason: String },
    #[error("cancelled by shutdown")]
    Cancelled,
    #[error("failed to build the HTTP client: {0}")]
    Setup(String),
}

impl AzureError {
    pub fn status(&self) -> Option<u16> {
        match self {
            AzureError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
    pub fn code(&self) -> Option<&str> {
        match self {
            AzureError::Status { code, .. } => code.as_deref(),
            _ => None,
        }
    }
    pub fn service_name(s: Service) -> &'static str {
        s.as_str()
    }
}

/// The error codes an Azure error body carries, read without keeping the body: Key Vault's
/// `{"error":{"code","innererror":{"code"}}}`, Entra's `{"error","error_codes":[..]}`, IMDS's
/// `{"error"}`, App Configuration's problem+json `{"type"}`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: Option<String>,
}
