//! Tests of the OpenAI-compatible client: URLs, redaction, retries, validation.

use super::*;

#[test]
fn credentials_never_show() {
    assert_eq!(
        strip_userinfo("http://user:pa@ss@host:8080/v1?x=@"),
        "http://host:8080/v1?x=@"
    );
    assert_eq!(strip_userinfo("https://host/v1"), "https://host/v1");
    assert_eq!(
        redact_bearer("echo: Authorization: Bearer sk-123, and bearer abc\""),
        "echo: Authorization: Bearer [redacted], and bearer [redacted]\""
    );
    assert_eq!(
        redact_bearer("authorization: Basic dXNlcjpwdw==\nx"),
        "authorization: Basic [redacted]\nx"
    );
    let mut cfg = EndpointConfig::new("http://u:secret@127.0.0.1:1/v1", "m");
    assert_eq!(cfg.identity(), "openai:http://127.0.0.1:1/v1:m");
    cfg.api_key_env = "LLM_JUDGE_TEST_NO_SUCH_VAR".into();
    let b = OpenAiBackend::new(cfg).unwrap();
    assert!(!format!("{b:?}").contains("secret"));
}

#[test]
fn retry_after_is_bounded() {
    assert_eq!(retry_after("NaN"), None);
    assert_eq!(retry_after("-1"), None);
    assert_eq!(retry_after("inf"), None);
    assert_eq!(retry_after(" 2 "), Some(Duration::from_secs(2)));
    assert_eq!(retry_after("1e300"), Some(Duration::from_secs(60)));
    assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
}

#[test]
fn endpoint_fields_are_validated_by_name() {
    let ok = EndpointConfig::new("http://127.0.0.1:1/v1", "m");
    assert!(ok.validate("judge.endpoint").is_ok());
    let cases: Vec<(EndpointConfig, &str)> = vec![
        (
            EndpointConfig {
                backoff_s: Some(-1.0),
                ..ok.clone()
            },
            "backoff_s",
        ),
        (
            EndpointConfig {
                timeout_s: f64::INFINITY,
                ..ok.clone()
            },
            "timeout_s",
        ),
        (
            EndpointConfig {
                timeout_s: 0.0,
                ..ok.clone()
            },
            "timeout_s",
        ),
        // Every call would time out, and the run would say a rerun may help.
        (
            EndpointConfig {
                timeout_s: 1e-300,
                ..ok.clone()
            },
            "timeout_s",
        ),
        (
            EndpointConfig {
                max_response_bytes: 0,
                ..ok.clone()
            },
            "max_response_bytes",
        ),
        (
            EndpointConfig {
                requests_per_s: Some(1e-300),
                ..ok.clone()
            },
            "requests_per_s",
        ),
        (
            EndpointConfig {
                in_flight: 0,
                ..ok.clone()
            },
            "in_flight",
        ),
        (
            EndpointConfig {
                base_urls: vec![],
                ..ok.clone()
            },
            "base_urls",
        ),
        (
            EndpointConfig {
                base_urls: vec!["ftp://x".into()],
                ..ok.clone()
            },
            "base_urls",
        ),
        (
            EndpointConfig {
                price: Some(super::Price {
                    input_per_mtok: -1.0,
                    output_per_mtok: 1.0,
                }),
                ..ok.clone()
            },
            "price.input_per_mtok",
        ),
        (
            EndpointConfig {
                price: Some(super::Price {
                    input_per_mtok: 1.0,
                    output_per_mtok: f64::NAN,
                }),
                ..ok.clone()
            },
            "price.output_per_mtok",
        ),
    ];
    for (c, field) in cases {
        let e = c.validate("judge.endpoint").unwrap_err().to_string();
        assert!(e.contains(&format!("judge.endpoint.{field}")), "{e}");
    }
    // A limiter from an absurd rate is no limiter, not a panic.
    RateLimiter::new(Some(1e-300)).wait();
}

#[test]
fn url_credentials_are_read_decoded_and_kept_out_of_the_url() {
    let url = "http://al%40ice:p%20a%7Cs%5Es:w@LocalHost:80/v1";
    assert_eq!(
        super::userinfo(url),
        Some(("al@ice".to_string(), "p a|s^s:w".to_string()))
    );
    assert_eq!(super::strip_userinfo(url), "http://LocalHost:80/v1");
    assert_eq!(super::userinfo("http://host/v1"), None);
    // A `%` that starts no escape is kept as written.
    assert_eq!(super::percent_decode("100%_%4"), "100%_%4");
    let printable: String = (0x20u8..0x7f).map(char::from).collect();
    assert_eq!(
        super::percent_decode(&super::percent_encode(&printable)),
        printable
    );
}
