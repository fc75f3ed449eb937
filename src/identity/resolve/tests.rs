use super::*;

fn cfg() -> IdentityConfig {
    IdentityConfig {
        mode: IdentityMode::Auto,
        client_id: None,
        object_id: None,
        resource_id: None,
        tenant_id: None,
        federated_token_file: None,
        authority_host: None,
        imds_endpoint: Url::parse("http://169.254.169.254").unwrap(),
        client_secret_file: None,
        client_certificate_file: None,
        client_certificate_password_file: None,
        additionally_allowed_tenants: vec![],
        access_token_file: None,
    }
}

fn env(vars: &[(&str, &str)]) -> AzureEnv {
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    AzureEnv::from_vars(&vars)
}

fn workload_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AZURE_CLIENT_ID", "wi-client"),
        ("AZURE_TENANT_ID", "wi-tenant"),
        ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/azure/tokens/azure-identity-token"),
        ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com/"),
    ]
}

fn mode_of(c: &IdentityConfig, e: &AzureEnv) -> &'static str {
    resolve(c, &Cloud::Public, e).unwrap().mode()
}

#[test]
fn auto_uses_the_workload_identity_webhook_injection() {
    let r = resolve(&cfg(), &Cloud::Public, &env(&workload_env())).unwrap();
    let ResolvedIdentity::Workload { authority, tenant_id, client_id, token_file, .. } = &r else { panic!("{r:?}") };
    assert_eq!(authority.as_str(), "https://login.microsoftonline.com/");
    assert_eq!(tenant_id, "wi-tenant");
    assert_eq!(client_id, "wi-client");
    assert_eq!(token_file, &PathBuf::from("/var/run/secrets/azure/tokens/azure-identity-token"));
    assert_eq!(
        r.to_string(),
        "workload (client_id wi-client, tenant wi-tenant, token file /var/run/secrets/azure/tokens/azure-identity-token, \
         authority https://login.microsoftonline.com)"
    );
}

#[test]
fn auto_follows_the_spec_order() {
    let secret = [("AZURE_CLIENT_SECRET", "s3cret-canary"), ("AZURE_CLIENT_ID", "c"), ("AZURE_TENANT_ID", "t")];
    let app_service = [("IDENTITY_ENDPOINT", "http://localhost:42356/msi/token"), ("IDENTITY_HEADER", "hdr")];
    let mut all = workload_env();
    all.extend(secret);
    all.extend(app_service);
    all.push(("ACCESS_TOKEN", "tok"));
    assert_eq!(mode_of(&cfg(), &env(&all)), "client-secret");
    assert_eq!(mode_of(&cfg(), &env(&[&workload_env()[..], &app_service[..]].concat())), "workload");
    assert_eq!(mode_of(&cfg(), &env(&[&app_service[..], &[("ACCESS_TOKEN", "tok")][..]].concat())), "app-service");
    assert_eq!(mode_of(&cfg(), &env(&[("ACCESS_TOKEN", "tok")])), "access-token");
    assert_eq!(mode_of(&cfg(), &env(&[])), "managed");
    // A client secret without a tenant is not a service principal: fall through.
    assert_eq!(mode_of(&cfg(), &env(&[("AZURE_CLIENT_SECRET", "s"), ("AZURE_CLIENT_ID", "c")])), "managed");
    // Config file inputs count as well.
    let c = IdentityConfig { access_token_file: Some("/tmp/tok".into()), ..cfg() };
    assert_eq!(mode_of(&c, &env(&[])), "access-token");
}

#[test]
fn auto_detects_arc_from_identity_endpoint_and_imds_endpoint() {
    let arc_env = [
        ("IDENTITY_ENDPOINT", "http://localhost:40342/metadata/identity/oauth2/token"),
        ("IMDS_ENDPOINT", "http://localhost:40342"),
    ];
    let r = resolve(&cfg(), &Cloud::Public, &env(&arc_env)).unwrap();
    assert_eq!(r, ResolvedIdentity::Arc { endpoint: Url::parse(arc_env[0].1).unwrap(), identity: None });
    assert_eq!(r.to_string(), "arc (endpoint http://localhost:40342/metadata/identity/oauth2/token, system-assigned)");
    // IDENTITY_HEADER makes it App Service (Arc never sets it).
    let with_header = [&arc_env[..], &[("IDENTITY_HEADER", "h")][..]].concat();
    assert_eq!(mode_of(&cfg(), &env(&with_header)), "app-service");
}

#[test]
fn arc_selects_user_assigned_by_config_only_and_its_endpoint_must_be_loopback() {
    let c = IdentityConfig { mode: IdentityMode::Arc, ..cfg() };
    let endpoint = Url::parse("http://localhost:40342/metadata/identity/oauth2/token").unwrap();
    let r = resolve(&c, &Cloud::Public, &env(&[])).unwrap();
    assert_eq!(r, ResolvedIdentity::Arc { endpoint: endpoint.clone(), identity: None });
    // AZURE_CLIENT_ID is left to other tools: still the system-assigned identity.
    let r = resolve(&c, &Cloud::Public, &env(&[("AZURE_CLIENT_ID", "c")])).unwrap();
    assert_eq!(r, ResolvedIdentity::Arc { endpoint: endpoint.clone(), identity: None });
    let r = resolve(&IdentityConfig { object_id: Some("o".into()), ..c.clone() }, &Cloud::Public, &env(&[])).unwrap();
    assert_eq!(r, ResolvedIdentity::Arc { endpoint, identity: Some(UserAssigned::ObjectId("o".into())) });
    assert!(r.to_string().ends_with("user-assigned object_id o)"), "{r}");
    let err = resolve(
        &c,
        &Cloud::Public,
        &env(&[("IDENTITY_ENDPOINT", "http://10.0.0.5:40342/metadata/identity/oauth2/token")]),
    )
    .unwrap_err();
    assert!(err.reason.contains("not a loopback address"), "{}", err.reason);
    let err = resolve(&c, &Cloud::Public, &env(&[("IDENTITY_ENDPOINT", "not a url")])).unwrap_err();
    assert!(err.reason.contains("not an http(s) URL"), "{}", err.reason);
    let r = resolve(&c, &Cloud::Public, &env(&[("IDENTITY_ENDPOINT", "http://127.0.0.1:9/t")])).unwrap();
    assert_eq!(r.mode(), "arc");
}

#[test]
fn client_certificate_comes_after_client_secret_and_before_workload_identity() {
    let sp = [("AZURE_CLIENT_ID", "c"), ("AZURE_TENANT_ID", "t")];
    let cert = [&sp[..], &[("AZURE_CLIENT_CERTIFICATE_PATH", "/etc/sp/cert.pem")][..]].concat();
    let r = resolve(&cfg(), &Cloud::Public, &env(&cert)).unwrap();
    assert_eq!(
        r,
        ResolvedIdentity::ClientCertificate {
            authority: Url::parse("https://login.microsoftonline.com").unwrap(),
            tenant_id: "t".into(),
            client_id: "c".into(),
            cert_file: "/etc/sp/cert.pem".into(),
            password: None,
            send_chain: false,
            allowed_tenants: vec![],
            region: None,
        }
    );
    assert_eq!(
        r.to_string(),
        "client-certificate (client_id c, tenant t, certificate file /etc/sp/cert.pem, authority https://login.microsoftonline.com)"
    );
    let with_secret = [&cert[..], &[("AZURE_CLIENT_SECRET", "s")][..]].concat();
    assert_eq!(mode_of(&cfg(), &env(&with_secret)), "client-secret");
    let with_workload = [&cert[..], &[("AZURE_FEDERATED_TOKEN_FILE", "/t")][..]].concat();
    assert_eq!(mode_of(&cfg(), &env(&with_workload)), "client-certificate");
    // Without a tenant it is no service principal: fall through.
    assert_eq!(
        mode_of(&cfg(), &env(&[("AZURE_CLIENT_CERTIFICATE_PATH", "/c.pem"), ("AZURE_CLIENT_ID", "c")])),
        "managed"
    );
    // The config file's path wins over the environment's and selects the mode by itself.
    let c = IdentityConfig { client_certificate_file: Some("/cfg/cert.pem".into()), ..cfg() };
    match resolve(&c, &Cloud::Public, &env(&cert)).unwrap() {
        ResolvedIdentity::ClientCertificate { cert_file, .. } => {
            assert_eq!(cert_file, std::path::PathBuf::from("/cfg/cert.pem"))
        }
        other => panic!("{other:?}"),
    }
    let c = IdentityConfig { mode: IdentityMode::ClientCertificate, ..cfg() };
    let err = resolve(&c, &Cloud::Public, &env(&sp)).unwrap_err();
    assert_eq!(err.key, "identity.client_certificate_file");
    assert!(err.reason.contains("AZURE_CLIENT_CERTIFICATE_PATH"), "{}", err.reason);
}

#[test]
fn config_values_win_over_the_environment() {
    let c = IdentityConfig {
        client_id: Some("cfg-client".into()),
        tenant_id: Some("cfg-tenant".into()),
        federated_token_file: Some("/cfg/token".into()),
        authority_host: Some(Url::parse("https://login.microsoftonline.us").unwrap()),
        ..cfg()
    };
    let r = resolve(&c, &Cloud::Public, &env(&workload_env())).unwrap();
    assert_eq!(
        r,
        ResolvedIdentity::Workload {
            authority: Url::parse("https://login.microsoftonline.us").unwrap(),
            tenant_id: "cfg-tenant".into(),
            client_id: "cfg-client".into(),
            token_file: "/cfg/token".into(),
            allowed_tenants: vec![],
            token_proxy: None,
        }
    );
}

#[test]
fn workload_errors_name_the_missing_key_and_the_fix() {
    let c = IdentityConfig { mode: IdentityMode::Workload, ..cfg() };
    let err = resolve(&c, &Cloud::Public, &env(&[("AZURE_FEDERATED_TOKEN_FILE", "/t"), ("AZURE_TENANT_ID", "t")]))
        .unwrap_err();
    assert_eq!(err.key, "identity.client_id");
    assert_eq!(err.reason, "workload identity needs a client id: set identity.client_id or AZURE_CLIENT_ID");
    let err = resolve(&c, &Cloud::Public, &env(&[("AZURE_FEDERATED_TOKEN_FILE", "/t"), ("AZURE_CLIENT_ID", "c")]))
        .unwrap_err();
    assert_eq!(err.key, "identity.tenant_id");
    let err = resolve(&c, &Cloud::Public, &env(&[("AZURE_CLIENT_ID", "c"), ("AZURE_TENANT_ID", "t")])).unwrap_err();
    assert_eq!(err.key, "identity.federated_token_file");
    assert!(err.reason.contains("AZURE_FEDERATED_TOKEN_FILE"), "{}", err.reason);
    let err = resolve(
        &c,
        &Cloud::Public,
        &env(&[("AZURE_FEDERATED_TOKEN_FILE", "/t"), ("AZURE_CLIENT_ID", "c"), ("AZURE_TENANT_ID", "../evil")]),
    )
    .unwrap_err();
    assert_eq!(err.key, "identity.tenant_id");
}

#[test]
fn authority_host_defaults_to_the_cloud_and_must_be_https_unless_loopback() {
    let e: Vec<_> = workload_env().into_iter().filter(|(k, _)| *k != "AZURE_AUTHORITY_HOST").collect();
    let authority_of = |r: ResolvedIdentity| match r {
        ResolvedIdentity::Workload { authority, .. } => authority.to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(authority_of(resolve(&cfg(), &Cloud::China, &env(&e)).unwrap()), "https://login.chinacloudapi.cn/");
    assert_eq!(authority_of(resolve(&cfg(), &Cloud::UsGov, &env(&e)).unwrap()), "https://login.microsoftonline.us/");

    let with_authority = |a: &'static str| [&e[..], &[("AZURE_AUTHORITY_HOST", a)][..]].concat();
    assert_eq!(
        authority_of(resolve(&cfg(), &Cloud::Public, &env(&with_authority("http://127.0.0.1:8443/"))).unwrap()),
        "http://127.0.0.1:8443/"
    );
    assert_eq!(
        authority_of(resolve(&cfg(), &Cloud::Public, &env(&with_authority("http://localhost:1"))).unwrap()),
        "http://localhost:1/"
    );
    for bad in ["http://login.example.com", "not a url", "ftp://login.example.com"] {
        let err = resolve(&cfg(), &Cloud::Public, &env(&with_authority(bad))).unwrap_err();
        assert_eq!(err.key, "identity.authority_host", "{bad}");
        assert!(err.reason.contains("AZURE_AUTHORITY_HOST"), "{}", err.reason);
    }
    let c = IdentityConfig { authority_host: Some(Url::parse("http://login.example.com").unwrap()), ..cfg() };
    let err = resolve(&c, &Cloud::Public, &env(&e)).unwrap_err();
    assert_eq!(err.key, "identity.authority_host");
    assert!(err.reason.contains("https"), "{}", err.reason);
}

#[test]
fn managed_identity_selectors_come_from_config_then_azure_client_id() {
    let r = resolve(&cfg(), &Cloud::Public, &env(&[])).unwrap();
    assert_eq!(
        r,
        ResolvedIdentity::Managed { endpoint: Url::parse("http://169.254.169.254").unwrap(), identity: None }
    );
    assert_eq!(r.to_string(), "managed (IMDS http://169.254.169.254, system-assigned)");

    let r = resolve(&cfg(), &Cloud::Public, &env(&[("AZURE_CLIENT_ID", "env-client")])).unwrap();
    assert_eq!(r.to_string(), "managed (IMDS http://169.254.169.254, user-assigned client_id env-client)");

    let c = IdentityConfig { object_id: Some("oid".into()), ..cfg() };
    let r = resolve(&c, &Cloud::Public, &env(&[("AZURE_CLIENT_ID", "env-client")])).unwrap();
    assert_eq!(
        r,
        ResolvedIdentity::Managed {
            endpoint: c.imds_endpoint.clone(),
            identity: Some(UserAssigned::ObjectId("oid".into()))
        }
    );

    let c = IdentityConfig { resource_id: Some("/subscriptions/x".into()), client_id: Some("c".into()), ..cfg() };
    let err = resolve(&c, &Cloud::Public, &env(&[])).unwrap_err();
    assert_eq!(err.key, "identity.client_id");
    assert!(err.reason.contains("only one"), "{}", err.reason);
}

#[test]
fn app_service_needs_both_variables_and_hides_the_header() {
    let c = IdentityConfig { mode: IdentityMode::AppService, ..cfg() };
    let err =
        resolve(&c, &Cloud::Public, &env(&[("IDENTITY_ENDPOINT", "http://localhost:4141/MSI/token")])).unwrap_err();
    assert_eq!(err.key, "identity.mode");
    assert!(err.reason.contains("IDENTITY_HEADER"), "{}", err.reason);

    let e = env(&[("IDENTITY_ENDPOINT", "http://localhost:4141/MSI/token"), ("IDENTITY_HEADER", "header-canary")]);
    let r = resolve(&c, &Cloud::Public, &e).unwrap();
    assert_eq!(r.mode(), "app-service");
    assert_eq!(r.to_string(), "app-service (endpoint http://localhost:4141/MSI/token, system-assigned)");
    assert!(!format!("{r:?}").contains("canary"));
}

#[test]
fn secrets_never_show_in_display_or_debug() {
    let e = env(&[("AZURE_CLIENT_SECRET", "secret-canary"), ("AZURE_CLIENT_ID", "c"), ("AZURE_TENANT_ID", "t")]);
    let r = resolve(&cfg(), &Cloud::Public, &e).unwrap();
    assert_eq!(r.to_string(), "client-secret (client_id c, tenant t, secret from AZURE_CLIENT_SECRET, authority https://login.microsoftonline.com)");
    assert!(!format!("{r:?}").contains("canary"));

    let r = resolve(&cfg(), &Cloud::Public, &env(&[("ACCESS_TOKEN", "token-canary")])).unwrap();
    assert_eq!(r.to_string(), "access-token (from ACCESS_TOKEN)");
    assert!(!format!("{r:?}").contains("canary"));
}

#[test]
fn explicit_modes_without_their_inputs_say_what_to_set() {
    let c = IdentityConfig { mode: IdentityMode::ClientSecret, ..cfg() };
    let err = resolve(&c, &Cloud::Public, &env(&[("AZURE_CLIENT_ID", "c"), ("AZURE_TENANT_ID", "t")])).unwrap_err();
    assert_eq!(err.key, "identity.client_secret_file");
    assert!(err.reason.contains("AZURE_CLIENT_SECRET"));

    let c = IdentityConfig { mode: IdentityMode::AccessToken, ..cfg() };
    let err = resolve(&c, &Cloud::Public, &env(&[])).unwrap_err();
    assert_eq!(err.key, "identity.access_token_file");

    // A client secret file in the config selects client-secret in auto and needs its ids.
    let c = IdentityConfig { client_secret_file: Some("/etc/sp/secret".into()), ..cfg() };
    assert_eq!(resolve(&c, &Cloud::Public, &env(&[])).unwrap_err().key, "identity.client_id");
    let r = resolve(&c, &Cloud::Public, &env(&[("AZURE_CLIENT_ID", "c"), ("AZURE_TENANT_ID", "t")])).unwrap();
    assert!(r.to_string().contains("secret from file /etc/sp/secret"), "{r}");
}

#[test]
fn build_makes_the_credential_of_the_resolved_mode() {
    let client = crate::azure::testserver::test_client(0);
    let cases = [
        (env(&workload_env()), "workload"),
        (env(&[("ACCESS_TOKEN", "t")]), "access-token"),
        (env(&[]), "managed"),
        (env(&[("IDENTITY_ENDPOINT", "http://localhost:1/msi"), ("IDENTITY_HEADER", "h")]), "app-service"),
        (env(&[("AZURE_CLIENT_SECRET", "s"), ("AZURE_CLIENT_ID", "c"), ("AZURE_TENANT_ID", "t")]), "client-secret"),
        (
            env(&[("AZURE_CLIENT_CERTIFICATE_PATH", "/c.pem"), ("AZURE_CLIENT_ID", "c"), ("AZURE_TENANT_ID", "t")]),
            "client-certificate",
        ),
        (env(&[("IDENTITY_ENDPOINT", "http://localhost:40342/x"), ("IMDS_ENDPOINT", "http://localhost:40342")]), "arc"),
    ];
    for (e, mode) in cases {
        let r = resolve(&cfg(), &Cloud::Public, &e).unwrap();
        assert_eq!(build(&r, client.clone()).kind(), mode);
    }
}

#[test]
fn sdk_environment_forms_are_read_as_azure_identity_reads_them() {
    // A bare authority host is https (azure-identity's normalize_authority).
    let mut vars = workload_env();
    vars[3] = ("AZURE_AUTHORITY_HOST", "login.chinacloudapi.cn/");
    let r = resolve(&cfg(), &Cloud::Public, &env(&vars)).unwrap();
    let ResolvedIdentity::Workload { authority, .. } = &r else { panic!("{r:?}") };
    assert_eq!(authority.as_str(), "https://login.chinacloudapi.cn/");
    // The IMDS address from AZURE_POD_IDENTITY_AUTHORITY_HOST, unless configured.
    let vars = [("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://10.0.0.5:2579")];
    let r = resolve(&cfg(), &Cloud::Public, &env(&vars)).unwrap();
    assert!(matches!(&r, ResolvedIdentity::Managed { endpoint, .. } if endpoint.as_str() == "http://10.0.0.5:2579/"));
    let mut c = cfg();
    c.imds_endpoint = Url::parse("http://10.9.9.9").unwrap();
    let r = resolve(&c, &Cloud::Public, &env(&vars)).unwrap();
    assert!(matches!(&r, ResolvedIdentity::Managed { endpoint, .. } if endpoint.as_str() == "http://10.9.9.9/"));
    // Service Fabric is refused by name.
    let vars = [
        ("IDENTITY_ENDPOINT", "https://localhost:2377/x"),
        ("IDENTITY_HEADER", "h"),
        ("IDENTITY_SERVER_THUMBPRINT", "ab"),
    ];
    let e = resolve(&cfg(), &Cloud::Public, &env(&vars)).unwrap_err();
    assert!(e.reason.contains("Service Fabric"), "{e:?}");
}

#[test]
fn a_regional_authority_name_sends_service_principals_to_the_regional_endpoint() {
    let sp = [("AZURE_CLIENT_ID", "c"), ("AZURE_TENANT_ID", "t"), ("AZURE_CLIENT_SECRET", "s")];
    let with = |extra: &[(&'static str, &'static str)]| [&sp[..], extra].concat();
    let r = resolve(&cfg(), &Cloud::Public, &env(&with(&[("AZURE_REGIONAL_AUTHORITY_NAME", "westus2")]))).unwrap();
    assert!(
        r.to_string().ends_with("authority https://login.microsoftonline.com, region westus2 (tokens from https://westus2.login.microsoft.com))"),
        "{r}"
    );
    // Other clouds: the region goes before the authority's host (MSAL's rule).
    let r = resolve(&cfg(), &Cloud::UsGov, &env(&with(&[("AZURE_REGIONAL_AUTHORITY_NAME", "usgovvirginia")]))).unwrap();
    assert!(r.to_string().contains("tokens from https://usgovvirginia.login.microsoftonline.us"), "{r}");
    // TryAutoDetect takes REGION_NAME; without it, the central authority.
    let auto = with(&[("AZURE_REGIONAL_AUTHORITY_NAME", "TryAutoDetect"), ("REGION_NAME", "eastus")]);
    assert!(resolve(&cfg(), &Cloud::Public, &env(&auto)).unwrap().to_string().contains("region eastus"));
    let undetected = with(&[("AZURE_REGIONAL_AUTHORITY_NAME", "true")]);
    assert!(!resolve(&cfg(), &Cloud::Public, &env(&undetected)).unwrap().to_string().contains("region"));
    let bad = with(&[("AZURE_REGIONAL_AUTHORITY_NAME", "West US/2")]);
    let e = resolve(&cfg(), &Cloud::Public, &env(&bad)).unwrap_err();
    assert!(e.reason.contains("AZURE_REGIONAL_AUTHORITY_NAME") && e.reason.contains("not a region name"), "{e}");
    // Workload identity does not take it (azure-identity's ClientAssertionCredential does not).
    let wl = [&workload_env()[..], &[("AZURE_REGIONAL_AUTHORITY_NAME", "westus2")][..]].concat();
    assert!(!resolve(&cfg(), &Cloud::Public, &env(&wl)).unwrap().to_string().contains("region"));
}

#[test]
fn the_aks_token_proxy_variables_are_checked_as_azure_identity_checks_them() {
    let with = |extra: &[(&'static str, &'static str)]| [&workload_env()[..], extra].concat();
    let r = resolve(
        &cfg(),
        &Cloud::Public,
        &env(&with(&[
            ("AZURE_KUBERNETES_TOKEN_PROXY", "https://10.0.0.1:8443/p"),
            ("AZURE_KUBERNETES_SNI_NAME", "binding.aks"),
            ("AZURE_KUBERNETES_CA_FILE", "/ca.pem"),
        ])),
    )
    .unwrap();
    assert!(
        r.to_string().ends_with(", token proxy https://10.0.0.1:8443/p (server name binding.aks), CA file /ca.pem)"),
        "{r}"
    );
    for (bad, why) in [
        (vec![("AZURE_KUBERNETES_SNI_NAME", "binding.aks")], "AZURE_KUBERNETES_TOKEN_PROXY is not"),
        (vec![("AZURE_KUBERNETES_TOKEN_PROXY", "http://10.0.0.1")], "must be an https URL"),
        (vec![("AZURE_KUBERNETES_TOKEN_PROXY", "https://u:p@10.0.0.1")], "must be an https URL"),
        (
            vec![
                ("AZURE_KUBERNETES_TOKEN_PROXY", "https://10.0.0.1"),
                ("AZURE_KUBERNETES_CA_FILE", "/ca.pem"),
                ("AZURE_KUBERNETES_CA_DATA", "pem"),
            ],
            "set only one",
        ),
    ] {
        let e = resolve(&cfg(), &Cloud::Public, &env(&with(&bad))).unwrap_err();
        assert!(e.reason.contains(why), "{bad:?}: {e}");
    }
}
