//! HTTP/2 with prior knowledge (h2c) through two meshed pods (see [`Pair`]):
//! curl and nghttp as real h2 clients, trailers kept end to end.

use std::time::Instant;

use weft_tests::{Pair, sha256_file, write_random_file};

#[test]
fn curl_h2_prior_knowledge_keeps_trailers() {
    let m = Pair::start(&[], &[]);
    let curl = m.a.curl(&["--http2-prior-knowledge", &m.url("/trailers")]);
    assert_eq!(curl.run.code(), Some(0), "{}", curl.run);
    let head = curl.response();
    assert_eq!(head.version, "HTTP/2", "{}", curl.run);
    assert_eq!(head.status, 200, "{}", curl.run);
    assert_eq!(curl.body(), "weft-trailers\n", "{}", curl.run);
    // curl appends the trailers to the head dump after the body.
    assert_eq!(head.header("grpc-status"), Some("0"), "trailers lost:\n{}", curl.run);
    assert_eq!(head.header("grpc-message"), Some("weft-ok"), "trailers lost:\n{}", curl.run);
    m.proxy_a.wait_metric("weft_detect_total", &[("direction", "outbound"), ("outcome", "http2")], 1.0);
    m.proxy_a.wait_metric("weft_requests_total", &[("direction", "outbound")], 1.0);
    m.proxy_b.wait_metric("weft_requests_total", &[("direction", "inbound")], 1.0);
    m.proxy_a.wait_metric(
        "weft_responses_total",
        &[("direction", "outbound"), ("status_code", "200"), ("classification", "success")],
        1.0,
    );
}

#[test]
fn nghttp_sees_trailers_in_a_final_headers_frame() {
    let m = Pair::start(&[], &[]);
    let run = m.a.exec("nghttp", &["-v", &m.url("/trailers")]).ok();
    let out = &run.stdout;
    assert!(out.contains(") :status: 200"), "{run}");
    let trailer = out.find(") grpc-status: 0").unwrap_or_else(|| panic!("no grpc-status trailer:\n{run}"));
    assert!(out.contains(") grpc-message: weft-ok"), "{run}");
    // The trailers come after the data, in a HEADERS frame that ends the stream.
    let data = out.find("recv DATA frame").unwrap_or_else(|| panic!("no DATA frame:\n{run}"));
    assert!(data < trailer, "trailers before the data:\n{run}");
    let after = &out[trailer..];
    let frame = after.find("recv HEADERS frame").map(|i| &after[i..]).unwrap_or_default();
    assert!(frame.contains("END_STREAM"), "the trailers do not end the stream:\n{run}");
}

#[test]
fn concurrent_streams_are_multiplexed() {
    let m = Pair::start(&[], &[]);
    let urls: Vec<_> = (0..4).map(|i| m.url(&format!("/delay?ms=600&i={i}"))).collect();
    let mut args = vec!["-v"];
    args.extend(urls.iter().map(String::as_str));
    let start = Instant::now();
    let run = m.a.exec("nghttp", &args).ok();
    let elapsed = start.elapsed();
    eprintln!("measured: 4 streams took {elapsed:?}");
    assert_eq!(run.stdout.matches(") :status: 200").count(), 4, "{run}");
    // One after another they would take 2.4 s; concurrently about 0.6 s.
    assert!(elapsed.as_secs_f64() < 1.8, "4 concurrent 600 ms requests took {elapsed:?}");
    m.proxy_b.wait_metric("weft_requests_total", &[("direction", "inbound")], 4.0);
}

#[test]
fn twenty_mib_h2_body_is_byte_exact() {
    let m = Pair::start(&[], &[]);
    let dir = m.a.dir();
    let sent = dir.join("sent.bin");
    let size = 20 * 1024 * 1024;
    write_random_file(&sent, size, 2);
    let echoed = dir.join("echoed.bin");
    let data = format!("@{}", sent.display());
    let curl = m.a.curl(&[
        "--http2-prior-knowledge",
        "--data-binary",
        &data,
        "-o",
        &echoed.to_string_lossy(),
        &m.url("/echo"),
    ]);
    assert_eq!(curl.run.code(), Some(0), "{}", curl.run);
    assert_eq!(curl.status(), 200, "{}", curl.run);
    assert_eq!(std::fs::metadata(&echoed).unwrap().len(), size as u64);
    assert_eq!(sha256_file(&echoed), sha256_file(&sent), "the echoed body differs");
}
