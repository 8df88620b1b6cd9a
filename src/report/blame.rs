//! The text of a blame search (`compare --blame`, and bisect's first failing step): the
//! level-1 table, the refined group's table, and the culprit in one line.

use crate::compare::blame::{Blame, BlameRow};
use crate::compare::metrics::fmt_num;

pub fn render(b: &Blame) -> String {
    let mut o = format!(
        "\nblame: `{}` vs its parent `{}`, KL mean {} over {} tokens; {} forward passes\n",
        b.step,
        b.parent,
        fmt_num(b.kl_mean),
        b.scored_tokens,
        b.forward_passes
    );
    if b.groups.is_empty() {
        o.push_str("  nothing to blame: the step scores the same as its parent\n");
        return o;
    }
    o.push_str("  each group of the step's tensors swapped alone into the parent:\n");
    table(&mut o, &b.groups);
    if let Some(g) = &b.refined {
        o.push_str(&format!("  inside {g}:\n"));
        table(&mut o, &b.modules);
    }
    o.push_str(&format!("  {}\n", b.headline()));
    o
}

fn table(o: &mut String, rows: &[BlameRow]) {
    let width = rows.iter().map(|r| r.group.chars().count()).max().unwrap_or(5).clamp(5, 48);
    o.push_str(&format!("    {:<width$} {:>7} {:>9} {:>6}\n", "group", "tensors", "KL mean", "share"));
    for r in rows {
        let (kl, share) = match (r.kl_mean, r.share) {
            (Some(k), Some(s)) => (fmt_num(k), format!("{:.0}%", 100.0 * s)),
            _ => ("-".into(), "-".into()),
        };
        let label: String = r.group.chars().take(width).collect();
        o.push_str(&format!("    {:<width$} {:>7} {:>9} {:>6}", label, r.tensors.len(), kl, share));
        if let Some(e) = &r.error {
            o.push_str(&format!("  could not run: {e}"));
        }
        o.push('\n');
    }
}
