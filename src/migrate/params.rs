//! The class's `spec.parameters`: the vault, the cloud, the tenant and the identity, read as
//! the driver reads them (types/parameters.go: values trimmed, booleans by Go's
//! `strconv.ParseBool`; provider.go `GetSecretsStoreObjectContent`: one identity mode at a
//! time; auth.go `NewConfig`/`GetCredential`: the mode decides, then a `clientID` means
//! workload identity, else a service principal from `nodePublishSecretRef`).

use serde_yaml::Value;

/// The sidecar's identity section for the class.
pub struct Identity {
    pub mode: &'static str,
    pub client_id: Option<String>,
}

pub struct Params {
    pub vault: String,
    pub cloud: &'static str,
    pub tenant_id: Option<String>,
    pub identity: Identity,
    /// The `objects` parameter, trimmed.
    pub objects: String,
    /// What the reader should know: identity differences, parameters left out.
    pub notes: Vec<String>,
}

/// The parameters the provider reads; anything else it ignores (and so does migrate, saying so).
const KNOWN: &[&str] = &[
    "keyvaultName",
    "cloudName",
    "usePodIdentity",
    "useVMManagedIdentity",
    "userAssignedIdentityID",
    "tenantId",
    "tenantID",
    "cloudEnvFileName",
    "clientID",
    "useAzureTokenProxy",
    "objects",
];

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Go's `strconv.ParseBool`; empty is false (parameters.go `GetUsePodIdentity` and siblings).
fn go_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        other => Err(format!("parameter {key} is {other:?}, not a boolean (the driver fails the mount)")),
    }
}

pub fn read(params: &Value) -> Result<Params, String> {
    let map = params.as_mapping().ok_or("spec.parameters is missing or not a mapping")?;
    let mut notes = Vec::new();
    let get = |key: &str| map.get(key).and_then(text).unwrap_or_default();
    for k in map.keys() {
        let k = k.as_str().unwrap_or_default();
        if !KNOWN.contains(&k) && !k.starts_with("csi.storage.k8s.io/") {
            notes.push(format!(
                "parameter {k} is not one the Azure provider reads; left out (the driver ignores it too)"
            ));
        }
    }

    // provider.go getVaultURL: 3-24 characters of [-A-Za-z0-9].
    let vault = get("keyvaultName");
    if vault.is_empty() {
        return Err("parameter keyvaultName is not set (the driver fails the mount)".into());
    }
    if !(3..=24).contains(&vault.len()) || !vault.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!("keyvaultName {vault:?} is not a vault name: 3-24 letters, digits and dashes"));
    }
    // parameters.go GetTenantID: tenantID first, then the deprecated tenantId; required.
    let tenant = Some(get("tenantID")).filter(|t| !t.is_empty()).unwrap_or_else(|| get("tenantId"));
    if tenant.is_empty() {
        return Err("parameter tenantId (or tenantID) is not set (the driver fails the mount)".into());
    }

    // go-autorest EnvironmentFromName: case-insensitive; empty is the provider's default, public.
    let cloud_name = get("cloudName");
    let cloud = match cloud_name.to_ascii_uppercase().as_str() {
        "" | "AZURECLOUD" | "AZUREPUBLICCLOUD" => "public",
        "AZURECHINACLOUD" => "china",
        "AZUREUSGOVERNMENT" | "AZUREUSGOVERNMENTCLOUD" => "usgov",
        "AZURESTACKCLOUD" => {
            return Err(format!(
                "cloudName {cloud_name}: the endpoints are in the node's file {:?} (cloudEnvFileName), which \
                 migrate cannot read; write the config with cloud: custom and custom_cloud from that file",
                get("cloudEnvFileName")
            ))
        }
        "AZUREGERMANCLOUD" => {
            return Err("cloudName AzureGermanCloud: that cloud is closed; the sidecar has no endpoints for it".into())
        }
        _ => return Err(format!("cloudName {cloud_name:?} is not a cloud the driver knows (it fails the mount)")),
    };
    if !get("cloudEnvFileName").is_empty() && cloud != "custom" {
        notes.push(format!(
            "parameter cloudEnvFileName is left out: the driver reads it only for AzureStackCloud (cloudName here: {})",
            if cloud_name.is_empty() { "unset" } else { cloud_name.as_str() }
        ));
    }

    let pod_identity = go_bool("usePodIdentity", &get("usePodIdentity"))?;
    let vm_identity = go_bool("useVMManagedIdentity", &get("useVMManagedIdentity"))?;
    let token_proxy = go_bool("useAzureTokenProxy", &get("useAzureTokenProxy"))?;
    if [pod_identity, vm_identity, token_proxy].iter().filter(|b| **b).count() > 1 {
        return Err("only one of usePodIdentity, useVMManagedIdentity and useAzureTokenProxy may be true (the driver fails the mount)".into());
    }
    let client_id = Some(get("clientID")).filter(|c| !c.is_empty());
    let user_assigned = Some(get("userAssignedIdentityID")).filter(|c| !c.is_empty());
    let identity = if vm_identity {
        notes.push(
            "useVMManagedIdentity: the driver asked IMDS from the node; the sidecar asks IMDS from the pod \
             (mode managed), which reaches the same node's identities unless a network policy blocks 169.254.169.254"
                .into(),
        );
        Identity { mode: "managed", client_id: user_assigned.clone() }
    } else if pod_identity {
        notes.push(
            "usePodIdentity: aad-pod-identity (deprecated) answers the pod's IMDS requests through its NMI, so the \
             sidecar uses mode managed; the pod keeps its aadpodidbinding label"
                .into(),
        );
        Identity { mode: "managed", client_id: None }
    } else if token_proxy {
        let id = client_id.clone().ok_or("useAzureTokenProxy needs clientID (the driver fails the mount)")?;
        notes.push(
            "useAzureTokenProxy (identity binding): mode workload; AKS injects AZURE_KUBERNETES_TOKEN_PROXY and its \
             CA into pods that use an identity binding, and the sidecar honours them"
                .into(),
        );
        Identity { mode: "workload", client_id: Some(id) }
    } else if let Some(id) = client_id.clone() {
        Identity { mode: "workload", client_id: Some(id) }
    } else {
        return Err("no identity: the class names none (no clientID, useVMManagedIdentity or usePodIdentity), so the \
                    driver used the service principal of the volume's nodePublishSecretRef, a Kubernetes secret \
                    migrate cannot see; give the class a clientID (workload identity), or write the identity \
                    section by hand (mode client-secret with client_id and client_secret_file from that secret)"
            .into());
    };
    if user_assigned.is_some() && !vm_identity {
        notes.push(
            "parameter userAssignedIdentityID is left out: the driver reads it only with useVMManagedIdentity".into(),
        );
    }
    if client_id.is_some() && (vm_identity || pod_identity) {
        notes.push(
            "parameter clientID is left out: the driver ignores it when useVMManagedIdentity or usePodIdentity is true"
                .into(),
        );
    }
    let tenant_id = (identity.mode == "workload").then_some(tenant);
    let objects = get("objects");
    if objects.is_empty() {
        return Err("parameter objects is not set (the driver fails the mount)".into());
    }
    Ok(Params { vault, cloud, tenant_id, identity, objects, notes })
}
