//! Issue 13: a candidate with another id space, compared through a declared token map
//! (`compare --token-map`). The zoo's llama-sft-good-vocab-trimmed is llama-sft-good with its
//! vocabulary trimmed to the 250 tokens a corpus uses and renumbered (testdata/zoo/vocab_trim.py):
//! on the kept tokens its logits are the source's, so through the map every score must say
//! "identical", and the source's probability on the dropped tokens must be what transformers
//! measured (measured_vocab_trim.json).

use std::path::Path;

use serde_json::Value;

use crate::common::{ckptcheck, tmp, zoo_path};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn pair() -> (String, String, String) {
    (s(&zoo_path("models/llama-sft-good")), s(&zoo_path("models/llama-sft-good-vocab-trimmed")), s(&zoo_path("prompts.jsonl")))
}

fn measured() -> Value {
    serde_json::from_str(&std::fs::read_to_string(zoo_path("measured_vocab_trim.json")).unwrap()).unwrap()
}

fn vocab(dir: &str) -> Vec<(String, u64)> {
    let t: Value = serde_json::from_str(&std::fs::read_to_string(Path::new(dir).join("tokenizer.json")).unwrap()).unwrap();
    t["model"]["vocab"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect()
}

#[test]
fn a_trimmed_vocabulary_is_refused_without_a_map() {
    let (r, c, p) = pair();
    let out = ckptcheck(&["compare", &r, &c, "--prompts", &p]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stderr.contains("different id spaces: only 3 of the 250 ids"), "{}", out.stderr);
    assert!(out.stderr.contains("--token-map auto"), "the refusal says how to declare a mapping: {}", out.stderr);
    assert!(!out.stderr.contains("loading"), "refused before loading: {}", out.stderr);
}

#[test]
fn through_an_automatic_map_a_trimmed_vocabulary_scores_as_identical() {
    let (r, c, p) = pair();
    let out = ckptcheck(&["compare", &r, &c, "--prompts", &p, "--token-map", "auto", "--layers", "--json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let v = out.json();
    let sm = &v["summary"];
    assert!(sm["kl"]["max"].as_f64().unwrap() < 1e-9, "{}", sm["kl"]);
    assert_eq!(sm["top1"], 1.0);
    assert_eq!(sm["prompt_token_mismatches"], 0, "the trimmed tokenizer encodes the prompts to the same tokens");
    assert_eq!(sm["flips"]["changed"], 0);
    assert_eq!(sm["cand_stop_rate"], 1.0);
    let (pr, pc) = (sm["p_eos_ref_mean"].as_f64().unwrap(), sm["p_eos_cand_mean"].as_f64().unwrap());
    assert!((pr - pc).abs() < 1e-6 && pr > 0.9, "{pr} {pc}");
    for l in v["layers"].as_array().unwrap() {
        assert_eq!(l["rel_l2"], 0.0, "{l}");
    }
    let m = &sm["token_map"];
    let want = measured();
    assert_eq!(m["shared"], want["kept"]);
    assert_eq!((m["reference_ids"].as_u64(), m["candidate_ids"].as_u64()), (Some(1024), want["kept"].as_u64()));
    // The reference's mass on the dropped tokens, against transformers' own softmax.
    for (ours, theirs) in [("ref_mass_outside_mean", "source_mass_on_dropped_mean"), ("ref_mass_outside_max", "source_mass_on_dropped_max")]
    {
        let (a, b) = (m[ours].as_f64().unwrap(), want[theirs].as_f64().unwrap());
        assert!((a - b).abs() <= 1e-4 * b + 1e-9, "{ours} {a} vs transformers {b}");
    }
    // The summary with its token map is what the report schema documents.
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/report-schema.json")).unwrap())
            .unwrap();
    let summary_schema = serde_json::json!({"$defs": schema["$defs"], "$ref": "#/$defs/compare/properties/summary"});
    let validator = jsonschema::validator_for(&summary_schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(sm).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let mut drifted = sm.clone();
    drifted["token_map"]["surprise"] = 1.into();
    assert!(!validator.is_valid(&drifted));
    let text = ckptcheck(&["compare", &r, &c, "--prompts", &p, "--token-map", "auto"]);
    assert!(
        text.stdout.contains("token map auto (equal token strings): 250 shared ids (reference 1024, candidate 250)"),
        "{}",
        text.stdout
    );
}

#[test]
fn a_map_file_is_read_as_declared_and_a_wrong_one_shows_as_damage() {
    let (r, c, p) = pair();
    let (rv, cv) = (vocab(&r), vocab(&c));
    let cand: std::collections::HashMap<_, _> = cv.into_iter().collect();
    let mut pairs: Vec<(u64, u64)> = rv.iter().filter_map(|(t, i)| cand.get(t).map(|&c| (*i, c))).collect();
    pairs.sort();
    let dir = tmp();
    let write = |name: &str, pairs: &[(u64, u64)]| {
        let obj: serde_json::Map<String, Value> = pairs.iter().map(|(r, c)| (r.to_string(), Value::from(*c))).collect();
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_string(&obj).unwrap()).unwrap();
        s(&path)
    };
    let right = write("right.json", &pairs);
    let out = ckptcheck(&["compare", &r, &c, "--prompts", &p, "--token-map", &right, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = out.json();
    assert!(v["summary"]["kl"]["max"].as_f64().unwrap() < 1e-9);
    assert_eq!(v["summary"]["token_map"]["source"], right.as_str());

    // Every candidate id moved one slot along the ordinary tokens (specials kept): the
    // candidate reads the wrong token everywhere, and the comparison must say so.
    let specials = 3;
    let mut wrong = pairs.clone();
    let n = wrong.len();
    for k in specials..n {
        wrong[k].1 = pairs[specials + (k - specials + 1) % (n - specials)].1;
    }
    let wrong = write("wrong.json", &wrong);
    let out = ckptcheck(&["compare", &r, &c, "--prompts", &p, "--token-map", &wrong, "--json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let v = out.json();
    assert_eq!(v["verdict"], "fail");
    assert!(v["summary"]["kl"]["mean"].as_f64().unwrap() > 1.0, "{}", v["summary"]["kl"]);
}

#[test]
fn tokens_the_map_cannot_carry_are_named() {
    let (r, c, _) = pair();
    // The built-in prompts use words the trimmed vocabulary dropped.
    let out = ckptcheck(&["compare", &r, &c, "--token-map", "auto", "--max-prompts", "2"]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr.contains("which the token map (auto (equal token strings)) gives no counterpart in the candidate's vocabulary (250 of the reference's 1024 ids are shared)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("uses the reference's token "), "{}", out.stderr);
    // A map that names an id the candidate does not have is refused before loading.
    let dir = tmp();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"5": 4000}"#).unwrap();
    let out = ckptcheck(&["compare", &r, &c, "--token-map", &s(&bad)]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("field `5`: candidate id 4000 is outside the candidate's 250 ids"), "{}", out.stderr);
    assert!(!out.stderr.contains("loading"), "{}", out.stderr);
    // Blame swaps tensors between the two, which needs one id space.
    let out = ckptcheck(&["compare", &r, &c, "--token-map", "auto", "--blame"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("cannot be used with"), "{}", out.stderr);
}

#[test]
fn a_corpus_is_scored_through_the_map() {
    let (r, c, _) = pair();
    let text = s(&zoo_path("corpus.txt"));
    let out = ckptcheck(&["compare", &r, &c, "--text", &text, "-c", "64", "--chunks", "4", "--token-map", "auto", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = out.json();
    assert!(v["summary"]["kl"]["max"].as_f64().unwrap() < 1e-9);
    assert_eq!(v["summary"]["prompt_token_mismatches"], 0);
    assert_eq!(v["prompts"].as_array().unwrap().len(), 4);
}
