use clap::Parser as _;

use super::*;

/// `weft rollout ARGS`, parsed as the real command line is.
#[derive(clap::Parser, Debug)]
struct Cli {
    #[command(flatten)]
    args: RolloutArgs,
}

const BASE: &[&str] = &["rollout", "--service", "web", "--stable", "web-v1", "--canary", "web-v2"];

fn parse(extra: &[&str]) -> Result<RolloutArgs, String> {
    Cli::try_parse_from(BASE.iter().chain(extra)).map(|c| c.args).map_err(|e| e.to_string())
}

fn options(extra: &[&str]) -> Result<Options, String> {
    parse(extra)?.options()
}

fn weights(steps: &[u32]) -> Vec<Split> {
    steps.iter().map(|&canary| Split::Weights { canary }).collect()
}

#[test]
fn step_plans_per_strategy() {
    let cases: &[(&[&str], Vec<Split>)] = &[
        (&["--strategy", "canary"], weights(&[10, 50, 100])),
        (&["--strategy", "canary", "--steps", "50,100"], weights(&[50, 100])),
        (&["--strategy", "canary", "--steps", "5%, 20%,60"], weights(&[5, 20, 60])),
        (&["--strategy", "ramped"], weights(&[25, 50, 75, 100])),
        (&["--strategy", "ramped", "--steps", "1,2,3"], weights(&[1, 2, 3])),
        (&["--strategy", "blue-green"], weights(&[100])),
        (
            &["--strategy", "ab", "--header", "x-version=v2"],
            vec![Split::Matching(AbMatch::Header { name: "x-version".into(), value: "v2".into() })],
        ),
        (
            &["--strategy", "ab", "--cookie", "group=b=c"],
            vec![Split::Matching(AbMatch::Cookie { name: "group".into(), value: "b=c".into() })],
        ),
        (&["--rollback"], vec![Split::ROLLBACK]),
    ];
    for (flags, want) in cases {
        let o = options(flags).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
        assert_eq!(&o.steps, want, "{flags:?}");
        assert_eq!(o.strategy.is_none(), flags.contains(&"--rollback"), "{flags:?}");
    }
    let o = options(&["--strategy", "canary"]).unwrap();
    assert_eq!(
        o.target,
        Target {
            service: "web".into(),
            namespace: "default".into(),
            port: 80,
            stable: "web-v1".into(),
            canary: "web-v2".into()
        }
    );
    assert_eq!(o.target.canary_backend(), "web-v2.default:80");
    assert_eq!((o.interval, o.max_error_rate.ppm, o.min_requests), (Duration::from_secs(30), 10_000, 20));
}

#[test]
fn bad_flags_are_refused_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "--strategy"),
        (&["--strategy", "linear"], "--strategy"),
        (&["--strategy", "canary", "--steps", "50,10"], "--steps"),
        (&["--strategy", "canary", "--steps", "0,50"], "--steps"),
        (&["--strategy", "canary", "--steps", "50,101"], "--steps"),
        (&["--strategy", "canary", "--steps", "ten"], "--steps"),
        (&["--strategy", "canary", "--interval", "500ms"], "--interval"),
        (&["--strategy", "canary", "--interval", "soon"], "--interval"),
        (&["--strategy", "canary", "--abort-on-error-rate", "2"], "--abort-on-error-rate"),
        (&["--strategy", "canary", "--abort-on-error-rate", "101%"], "--abort-on-error-rate"),
        (&["--strategy", "canary", "--port", "0"], "--port"),
        (&["--strategy", "canary", "--namespace", "Shop"], "--namespace"),
        (&["--strategy", "canary", "--min-requests=-1"], "--min-requests"),
        (&["--strategy", "ab", "--header", "x"], "--header"),
        (&["--strategy", "ab", "--header", "a=1", "--cookie", "b=2"], "--cookie"),
        (&["--rollback", "--strategy", "canary"], "--strategy"),
        // Checks across flags.
        (&["--strategy", "ab"], "--header NAME=VALUE or --cookie"),
        (
            &["--strategy", "canary", "--header", "x-version=v2"],
            "--header and --cookie are for --strategy ab, not canary",
        ),
        (&["--strategy", "blue-green", "--steps", "50,100"], "--steps is for --strategy canary or ramped"),
    ];
    for (flags, want) in cases {
        let e = options(flags).expect_err(&format!("{flags:?} was accepted"));
        assert!(e.contains(want), "{flags:?}: {e}");
    }
    let same = Cli::try_parse_from(["rollout", "--service", "web", "--stable", "v", "--canary", "v", "--rollback"]);
    assert!(same.unwrap().args.options().unwrap_err().contains("--stable and --canary are both `v`"));
    let own = Cli::try_parse_from(["rollout", "--service", "web", "--stable", "web", "--canary", "v", "--rollback"]);
    assert!(own.unwrap().args.options().unwrap_err().contains("--stable `web` is the Service being split"));
}

#[test]
fn error_rates() {
    for (text, ppm, shown) in [
        ("1%", Some(10_000), "1 %"),
        ("0.5%", Some(5_000), "0.5 %"),
        (" 5 % ", Some(50_000), "5 %"),
        ("0%", Some(0), "0 %"),
        ("100%", Some(1_000_000), "100 %"),
        ("0.0001%", Some(1), "0.0001 %"),
        ("12.25%", Some(122_500), "12.25 %"),
        ("2", None, ""),
        ("0.5", None, ""),
        ("100.01%", None, ""),
        ("0.00001%", None, ""),
        ("-1%", None, ""),
        ("1.%", None, ""),
        (".5%", None, ""),
        ("%", None, ""),
        ("1e2%", None, ""),
    ] {
        let parsed = text.parse::<ErrorRate>();
        assert_eq!(parsed.as_ref().ok().map(|r| r.ppm), ppm, "{text}: {parsed:?}");
        if let Ok(rate) = parsed {
            assert_eq!(rate.to_string(), shown);
        }
    }
    assert!("2".parse::<ErrorRate>().unwrap_err().contains("needs a % sign (e.g. 2%)"));
}

#[test]
fn the_abort_decision() {
    let rate = |s: &str| s.parse::<ErrorRate>().unwrap();
    let c = |success, failure| Counts { success, failure };
    let table = [
        // Below --min-requests: not judged, whatever failed.
        (c(0, 0), 20, "1%", Verdict::TooFew),
        (c(0, 19), 20, "1%", Verdict::TooFew),
        (c(0, 0), 0, "1%", Verdict::TooFew),
        // At or above it: judged.
        (c(20, 0), 20, "1%", Verdict::Healthy),
        (c(0, 20), 20, "1%", Verdict::Abort),
        // Exactly at the threshold goes on; just over it rolls back.
        (c(99, 1), 20, "1%", Verdict::Healthy),
        (c(98, 2), 20, "1%", Verdict::Abort),
        (c(199, 1), 20, "0.5%", Verdict::Healthy),
        (c(1993, 7), 20, "0.35%", Verdict::Healthy),
        (c(1992, 8), 20, "0.35%", Verdict::Abort),
        (c(95, 5), 20, "5%", Verdict::Healthy),
        (c(94, 6), 20, "5%", Verdict::Abort),
        (c(0, 100), 20, "100%", Verdict::Healthy),
        (c(100, 1), 20, "0%", Verdict::Abort),
        (c(1, 0), 0, "0%", Verdict::Healthy),
    ];
    for (counts, min, max, want) in table {
        assert_eq!(judge(counts, min, rate(max)), want, "{counts:?} min {min} max {max}");
    }
}

fn samples(text: &str) -> Vec<Sample> {
    crate::metrics::parse(text)
}

#[test]
fn canary_counts_come_from_route_requests_by_backend() {
    let text = r#"
# TYPE weft_route_requests_total counter
weft_route_requests_total{route="default/rollout-web/0",backend="web-v2.default:80",classification="success"} 40
weft_route_requests_total{route="default/rollout-web/0",backend="web-v2.default:80",classification="failure"} 2
weft_route_requests_total{route="",backend="web-v2.default:80",classification="success"} 3
weft_route_requests_total{route="default/rollout-web/0",backend="web-v1.default:80",classification="failure"} 9
weft_route_requests_total{route="default/rollout-web/0",backend="web-v2.shop:80",classification="failure"} 9
weft_responses_total{direction="outbound",authority="web",classification="failure"} 100
"#;
    assert_eq!(canary_counts(&samples(text), "web-v2.default:80"), Counts { success: 43, failure: 2 });
    assert_eq!(canary_counts(&samples(text), "web-v3.default:80"), Counts::default());

    let some = |success, failure| Some(Counts { success, failure });
    // Pods: one that answered both times, one restarted (its counts since are new), one that did not answer once.
    let before = [some(10, 1), some(50, 5), None];
    let after = [some(110, 3), some(4, 0), some(1000, 1000)];
    assert_eq!(delta(&before, &after), Some(Counts { success: 104, failure: 2 }));
    assert_eq!(delta(&[None, None], &[some(1, 1), None]), None, "nobody answered both times");
    assert_eq!(Counts { success: 5, failure: 3 }.failed_percent(), "37.5 % failed");
    assert_eq!(Counts::default().failed_percent(), "no requests");
}

#[test]
fn splits_describe_themselves() {
    let o = options(&["--strategy", "canary"]).unwrap();
    let t = &o.target;
    assert_eq!(Split::Weights { canary: 50 }.describe(t), "web-v2 at 50 %");
    let h = Split::Matching(AbMatch::Header { name: "x-version".into(), value: "v2".into() });
    assert_eq!(h.describe(t), "requests with header x-version: v2 to web-v2");
    let c = Split::Matching(AbMatch::Cookie { name: "group".into(), value: "b".into() });
    assert_eq!(c.describe(t), "requests with cookie group=b to web-v2");
}

#[test]
fn the_target_must_exist_in_the_run() {
    use crate::runrecord::{RunMode, ServiceRecord};
    let svc = |name: &str, ports: &[u16]| ServiceRecord {
        name: name.into(),
        namespace: "default".into(),
        ports: ports.into(),
    };
    let record = RunRecord {
        pid: 1,
        mode: RunMode::Netns,
        mesh_file: "/srv/mesh.yaml".into(),
        policies: vec![],
        services: vec![svc("web", &[80]), svc("web-v1", &[80]), svc("web-v2", &[80, 8080])],
        pods: vec![],
    };
    let mut t = options(&["--rollback"]).unwrap().target;
    check_target(&record, &t).unwrap();
    t.canary = "web-v3".into();
    let e = check_target(&record, &t).unwrap_err().to_string();
    assert_eq!(
        e,
        "--canary web-v3: the mesh /srv/mesh.yaml has no such Service in namespace default (it has: web, web-v1, web-v2)"
    );
    t.canary = "web-v2".into();
    t.port = 8080;
    let e = check_target(&record, &t).unwrap_err().to_string();
    assert_eq!(e, "--port 8080: Service web has port(s) 80, not 8080");
}

#[test]
fn every_strategys_route_parses() {
    for flags in [
        &["--strategy", "canary"][..],
        &["--strategy", "ramped"],
        &["--strategy", "blue-green"],
        &["--strategy", "ab", "--header", "x-version=v2"],
        &["--strategy", "ab", "--cookie", "group=b"],
        &["--rollback"],
    ] {
        let o = options(flags).unwrap();
        for split in &o.steps {
            let text = route::render(&o.target, split).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
            route::parse_one(&text).unwrap();
        }
    }
}

#[test]
fn a_proxy_lags_until_it_runs_a_newer_policy_for_the_service() {
    let before = [Some(vec![4, 7]), Some(vec![3]), Some(vec![]), None, Some(vec![5])];
    // Pod 0 saw version 8 on one of its targets, pod 1 nothing new, pod 2
    // never called the Service, pod 3 could not be read, pod 4 went away.
    let now = [Some(vec![4, 8]), Some(vec![3]), Some(vec![9]), Some(vec![9]), None];
    assert_eq!(lagging(&before, &now), 1);
    let now = [Some(vec![8, 8]), Some(vec![4]), Some(vec![]), None, Some(vec![6])];
    assert_eq!(lagging(&before, &now), 0);
}

#[test]
fn policy_versions_are_read_for_the_service_and_port_only() {
    let config = r#"{"discovery": {"targets": [
        {"target": "198.18.0.200:80", "service": "web.default", "policy_version": 12},
        {"target": "web.default.svc.cluster.local:80", "service": "web.default", "policy_version": 11},
        {"target": "198.18.0.200:8080", "service": "web.default", "policy_version": 40},
        {"target": "198.18.0.201:80", "service": "web-v1.default", "policy_version": 50},
        {"target": "198.18.0.9:80", "service": null, "policy_version": null}
    ]}}"#;
    assert_eq!(crate::probe::versions_in_config(config, "web.default", 80), [12, 11]);
    assert!(crate::probe::versions_in_config("not json", "web.default", 80).is_empty());
}
