/// The standard Azure environment variables, captured once from the process environment (or a
/// test's list), so nothing below reads `std::env` and tests never mutate it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AzureEnv {
    pub client_id: Option<String>,
    pub tenant_id: Option<String>,
    pub federated_token_file: Option<String>,
    pub authority_host: Option<String>,
    /// Secret: never printed (see the `Debug` impl).
    pub client_secret: Option<String>,
    pub client_certificate_path: Option<String>,
    /// Secret: never printed.
    pub client_certificate_password: Option<String>,
    /// `AZURE_CLIENT_SEND_CERTIFICATE_CHAIN`: `true` or `1` sends the chain as `x5c`.
    pub client_send_certificate_chain: Option<String>,
    pub identity_endpoint: Option<String>,
    /// Secret-ish (anti-SSRF header): never printed.
    pub identity_header: Option<String>,
    pub imds_endpoint: Option<String>,
    /// The IMDS address the Azure SDKs use instead of 169.254.169.254 (aad-pod-identity's NMI).
    pub pod_identity_authority_host: Option<String>,
    /// Service Fabric's managed identity endpoint certificate: its presence means Service Fabric.
    pub identity_server_thumbprint: Option<String>,
    /// Secret: never printed.
    pub access_token: Option<String>,
    pub ssl_cert_file: Option<String>,
    /// `AZURE_REGIONAL_AUTHORITY_NAME`: regional Entra token issuance for service principals.
    pub regional_authority_name: Option<String>,
    /// `REGION_NAME`: where MSAL's region auto-detection looks first.
    pub region_name: Option<String>,
    /// The AKS identity-binding token proxy: its URL, server name and CA.
    pub kubernetes_token_proxy: Option<String>,
    pub kubernetes_sni_name: Option<String>,
    pub kubernetes_ca_file: Option<String>,
    pub kubernetes_ca_data: Option<String>,
}

impl AzureEnv {
    pub fn from_vars(vars: &[(String, String)]) -> Self {
        let get = |k: &str| vars.iter().find(|(n, v)| n == k && !v.is_empty()).map(|(_, v)| v.clone());
        AzureEnv {
            client_id: get("AZURE_CLIENT_ID"),
            tenant_id: get("AZURE_TENANT_ID"),
            federated_token_file: get("AZURE_FEDERATED_TOKEN_FILE"),
            authority_host: get("AZURE_AUTHORITY_HOST"),
            client_secret: get("AZURE_CLIENT_SECRET"),
            client_certificate_path: get("AZURE_CLIENT_CERTIFICATE_PATH"),
            client_certificate_password: get("AZURE_CLIENT_CERTIFICATE_PASSWORD"),
            client_send_certificate_chain: get("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN"),
            identity_endpoint: get("IDENTITY_ENDPOINT"),
            identity_header: get("IDENTITY_HEADER"),
            imds_endpoint: get("IMDS_ENDPOINT"),
            pod_identity_authority_host: get("AZURE_POD_IDENTITY_AUTHORITY_HOST"),
            identity_server_thumbprint: get("IDENTITY_SERVER_THUMBPRINT"),
            access_token: get("ACCESS_TOKEN"),
            ssl_cert_file: get("SSL_CERT_FILE"),
            regional_authority_name: get("AZURE_REGIONAL_AUTHORITY_NAME"),
            region_name: get("REGION_NAME"),
            kubernetes_token_proxy: get("AZURE_KUBERNETES_TOKEN_PROXY"),
            kubernetes_sni_name: get("AZURE_KUBERNETES_SNI_NAME"),
            kubernetes_ca_file: get("AZURE_KUBERNETES_CA_FILE"),
            kubernetes_ca_data: get("AZURE_KUBERNETES_CA_DATA"),
        }
    }
}

impl std::fmt::Debug for AzureEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |o: &Option<String>| if o.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("AzureEnv")
            .field("client_id", &self.client_id)
            .field("tenant_id", &self.tenant_id)
            .field("federated_token_file", &self.federated_token_file)
            .field("authority_host", &self.authority_host)
            .field("client_secret", &set(&self.client_secret))
            .field("client_certificate_path", &self.client_certificate_path)
            .field("client_certificate_password", &set(&self.client_certificate_password))
            .field("client_send_certificate_chain", &self.client_send_certificate_chain)
            .field("identity_endpoint", &self.identity_endpoint)
            .field("identity_header", &set(&self.identity_header))
            .field("imds_endpoint", &self.imds_endpoint)
            .field("pod_identity_authority_host", &self.pod_identity_authority_host)
            .field("identity_server_thumbprint", &self.identity_server_thumbprint)
            .field("access_token", &set(&self.access_token))
            .field("ssl_cert_file", &self.ssl_cert_file)
            .finish()
    }
}
