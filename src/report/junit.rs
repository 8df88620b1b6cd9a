//! JUnit XML for CI: one test case per step × check (lint, merge-check, compare vs reference,
//! compare vs parent); a failing check is a `<failure>` with the cause in its message.
//!
//! Class names are `<lineage>.<step>` with every character outside `[A-Za-z0-9_-]` written `_`
//! (CI viewers split class names at dots and choke on spaces and arrows). Every case has a
//! `time`: lint and merge-check their own step's; the comparisons run in one lockstep pass, so
//! each comparison case gets an equal share of that pass.

use super::escape;
use crate::checks::{Finding, Severity};
use crate::pipeline::run::{evidence, PipelineReport};
use crate::verdict::Verdict;

pub struct Junit;

/// Error findings, a summary counted as the findings it stands for.
fn error_count(findings: &[Finding]) -> u64 {
    findings.iter().filter(|f| f.severity == Severity::Error).map(Finding::weight).sum()
}

struct Case {
    class: String,
    name: &'static str,
    seconds: f64,
    failure: Option<(String, String)>,
    error: Option<String>,
}

impl Junit {
    pub fn render(&self, r: &PipelineReport) -> String {
        let mut cases = Vec::new();
        let comparisons = r.steps.iter().map(|s| s.vs_reference.iter().count() + s.vs_parent.iter().count()).sum::<usize>();
        let compare_share = r.compare_seconds / comparisons.max(1) as f64;
        for s in &r.steps {
            let class = format!("{}.{}", class_part(&r.name), class_part(&s.label));
            let errors: Vec<String> = s
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .map(|f| format!("{} {} [{}]: {}", f.id, f.file, f.field.clone().unwrap_or_default(), f.message))
                .collect();
            cases.push(Case {
                class: class.clone(),
                name: "lint",
                seconds: s.seconds.lint,
                failure: (!errors.is_empty()).then(|| (format!("{} lint error(s)", error_count(&s.findings)), errors.join("\n"))),
                error: None,
            });
            if let Some(m) = &s.merge {
                let errors: Vec<String> =
                    m.findings.iter().filter(|f| f.severity == Severity::Error).map(|f| format!("{}: {}", f.id, f.message)).collect();
                cases.push(Case {
                    class: class.clone(),
                    name: "merge-check",
                    seconds: s.seconds.merge,
                    failure: (!errors.is_empty()).then(|| (format!("{} merge error(s)", error_count(&m.findings)), errors.join("\n"))),
                    error: None,
                });
            }
            for (name, c) in [("compare-vs-reference", &s.vs_reference), ("compare-vs-parent", &s.vs_parent)] {
                if let Some(c) = c {
                    cases.push(Case {
                        class: class.clone(),
                        name,
                        seconds: compare_share,
                        failure: (c.verdict == Verdict::Fail)
                            .then(|| (evidence(c), format!("KL mean {:.4}, top-1 {:.1}%", c.summary.kl.mean, 100.0 * c.summary.top1))),
                        error: None,
                    });
                }
            }
            if let Some(e) = &s.error {
                cases.push(Case { class, name: "run", seconds: s.seconds.load, failure: None, error: Some(e.clone()) });
            }
        }
        let failures = cases.iter().filter(|c| c.failure.is_some()).count();
        let errors = cases.iter().filter(|c| c.error.is_some()).count();
        let total: f64 = r.compare_seconds + r.steps.iter().map(|s| s.seconds.lint + s.seconds.merge + s.seconds.load).sum::<f64>();
        let mut o = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        o.push_str(&format!(
            "<testsuites name=\"ckptcheck\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{total:.3}\">\n  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{total:.3}\">\n",
            cases.len(),
            escape(&r.name),
            cases.len()
        ));
        for c in &cases {
            o.push_str(&format!("    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"", escape(&c.class), c.name, c.seconds));
            match (&c.failure, &c.error) {
                (Some((msg, body)), _) => {
                    o.push_str(&format!(">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n", escape(msg), escape(body)))
                }
                (None, Some(e)) => o.push_str(&format!(">\n      <error message=\"{}\"/>\n    </testcase>\n", escape(e))),
                (None, None) => o.push_str("/>\n"),
            }
        }
        o.push_str("  </testsuite>\n</testsuites>\n");
        o
    }
}

/// A lineage or step name as one class-name part: `[A-Za-z0-9_-]` kept, every run of anything
/// else one `_` (`LoRA merged: a → b` → `LoRA_merged_a_b`).
fn class_part(name: &str) -> String {
    let mut o = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            o.push(c);
        } else if !o.ends_with('_') {
            o.push('_');
        }
    }
    let o = o.trim_matches('_');
    if o.is_empty() {
        "step".into()
    } else {
        o.to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn class_names_have_no_spaces_arrows_or_dots() {
        assert_eq!(
            super::class_part("LoRA merged by peft: instruct → instruct+lora → merged"),
            "LoRA_merged_by_peft_instruct_instruct_lora_merged"
        );
        assert_eq!(super::class_part("gguf-q4_k_m"), "gguf-q4_k_m");
        assert_eq!(super::class_part("v1.2"), "v1_2");
        assert_eq!(super::class_part("→"), "step");
    }
}
