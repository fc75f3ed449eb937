#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| azure_secrets_sidecar::fuzzing::token_response(data));
