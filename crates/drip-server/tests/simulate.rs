//! `drip simulate` as a user runs it: the binary with a fixed seed. Every
//! printed line and both totals are checked against decisions recomputed here
//! from the core's `decide`; the PNG and SVG plots decode; the same seed gives
//! the same bytes.

use std::path::{Path, PathBuf};
use std::process::Command;

use drip::core::{self, Request, State};
use drip::{Limit, Mode, Policy, Rate};

fn drip(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_drip"))
        .arg("simulate")
        .args(args)
        .output()
        .expect("run drip simulate");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "drip simulate failed: {stderr}");
    (stdout, stderr)
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drip-simulate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// (t ns, size) of every packet, from the CSV the run wrote.
fn packets_from_csv(path: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("t_s,size_bytes,outcome,level_after_bytes,queue_after_packets")
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 5, "{l}");
            let t: f64 = f[0].parse().unwrap();
            ((t * 1e9).round() as u64, f[1].parse().unwrap())
        })
        .collect()
}

/// The expected output, decided here by the core itself.
fn expected(policy: &Policy, packets: &[(u64, u64)]) -> String {
    let mut state = State::default();
    let (mut allowed, mut denied) = (0, 0);
    let mut out = String::new();
    for &(at, size) in packets {
        let d = core::decide(policy, &mut state, at, Request::check(size));
        if d.allowed() {
            allowed += size;
            out += &format!("Packet of {size} bytes allowed.\n");
        } else {
            denied += size;
            out += &format!("Packet of {size} bytes denied. Wait for bucket to drain.\n");
        }
    }
    out += &format!("Total allowed data: {allowed} bytes\nTotal denied data: {denied} bytes\n");
    out
}

fn check_lines_against_core(mode: Mode, extra: &[&str]) {
    // Its own file names: the plot test writes `{mode}-{round}.*` beside it.
    let name = format!("lines-{}-{}", mode.as_str(), extra.len());
    let csv = tmp(&format!("{name}.csv"));
    let mut args = vec![
        "--capacity",
        "300",
        "--rate",
        "150",
        "--packets",
        "80",
        "--min-size",
        "10",
        "--max-size",
        "120",
        "--seed",
        "42",
        "--mode",
        mode.as_str(),
        "--csv",
        csv.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (stdout, _) = drip(&args);
    let packets = packets_from_csv(&csv);
    assert_eq!(packets.len(), 80);
    assert!(packets.iter().all(|&(_, s)| (10..=120).contains(&s)));
    let policy = Policy::new(
        mode,
        Limit::new(Rate::per_second(150).unwrap(), 300).unwrap(),
    );
    let want = expected(&policy, &packets);
    // Line by line first, for a readable failure.
    for (i, (got, want)) in stdout.lines().zip(want.lines()).enumerate() {
        assert_eq!(got, want, "line {}", i + 1);
    }
    assert_eq!(stdout, want);
    assert!(stdout.contains(" allowed.\n") && stdout.contains(" denied. "));
}

#[test]
fn police_lines_and_totals_are_the_cores_decisions() {
    check_lines_against_core(Mode::Police, &[]);
}

#[test]
fn shape_lines_and_totals_are_the_cores_decisions() {
    check_lines_against_core(Mode::Shape, &[]);
}

#[test]
fn poisson_arrivals_lines_are_the_cores_decisions() {
    check_lines_against_core(Mode::Police, &["--arrivals", "poisson:8"]);
}

fn png_size(path: &Path) -> (u32, u32) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a decodable frame");
    // Not a blank image: more than a handful of distinct pixels.
    let distinct: std::collections::HashSet<&[u8]> = buf.chunks(3).collect();
    assert!(distinct.len() > 5, "{} colours", distinct.len());
    (info.width, info.height)
}

#[test]
fn plots_are_written_decodable_and_deterministic() {
    for mode in ["police", "shape"] {
        let mut files = Vec::new();
        for round in 0..2 {
            let png_path = tmp(&format!("{mode}-{round}.png"));
            let svg_path = tmp(&format!("{mode}-{round}.svg"));
            let csv_path = tmp(&format!("{mode}-{round}.csv"));
            let (stdout, _) = drip(&[
                "--seed",
                "7",
                "--mode",
                mode,
                "--plot",
                png_path.to_str().unwrap(),
                "--csv",
                csv_path.to_str().unwrap(),
            ]);
            let (stdout_svg, _) = drip(&[
                "--seed",
                "7",
                "--mode",
                mode,
                "--plot",
                svg_path.to_str().unwrap(),
            ]);
            assert_eq!(stdout, stdout_svg);

            assert_eq!(png_size(&png_path), (1100, 560));
            let svg = std::fs::read_to_string(&svg_path).unwrap();
            let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
            assert_eq!(doc.root_element().tag_name().name(), "svg");
            let texts: String = doc
                .descendants()
                .filter(|n| n.is_text())
                .filter_map(|n| n.text())
                .collect();
            assert!(texts.contains("fill level (bytes)"), "axis label missing");
            assert!(texts.contains("time (s)"), "axis label missing");
            assert_eq!(texts.contains("queue length"), mode == "shape");
            files.push([
                stdout.into_bytes(),
                std::fs::read(&png_path).unwrap(),
                std::fs::read(&svg_path).unwrap(),
                std::fs::read(&csv_path).unwrap(),
            ]);
        }
        assert!(files[0].iter().all(|f| !f.is_empty()));
        assert!(
            files[0] == files[1],
            "{mode}: the same seed gave other bytes"
        );
    }
    // Another seed, other packets.
    let (a, _) = drip(&["--seed", "7"]);
    let (b, _) = drip(&["--seed", "8"]);
    assert_ne!(a, b);
}

#[test]
fn bad_input_names_the_flag() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_drip"))
            .arg("simulate")
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8(out.stderr).unwrap()
    };
    assert!(run(&["--capacity", "0"]).contains("capacity must be an integer in 1..=4294967295"));
    assert!(run(&["--rate", "0"]).contains("leak_rate"));
    assert!(run(&["--min-size", "50", "--max-size", "10"]).contains("--max-size"));
    assert!(run(&["--arrivals", "uniform:3"]).contains("poisson:RATE"));
    assert!(run(&["--interval", "0s"]).contains("--interval"));
    assert!(run(&["--plot", "x.jpg", "--seed", "1"]).contains(".png or .svg"));
}
