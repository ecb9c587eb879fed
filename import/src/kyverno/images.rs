//! Which images a `verifyImages` entry is about: the patterns it checks and those it skips.

use super::super::{
    document::{index, string, strings, Fields, Report},
    draft::DraftImage,
    glob::{self, Dialect, Reading},
};

/// The images an entry checks (`imageReferences` and `image`, read widely), and those it skips
/// (`skipImageReferences`, read narrowly), as pullgate globs.
pub(super) fn images(fields: &mut Fields<'_>, report: &mut Report<'_>) -> (Vec<DraftImage>, Option<Vec<DraftImage>>) {
    let mut patterns = Vec::new();
    if let Some(references) = fields.get("imageReferences") {
        let refs_path = fields.path("imageReferences");
        for (i, pattern) in strings(references, &refs_path, report).into_iter().enumerate() {
            patterns.extend(glob::translate(
                &pattern,
                Dialect::KyvernoWildcard,
                Reading::Wide,
                &index(&refs_path, i),
                report,
            ));
        }
    }
    if let Some(image) = fields.get("image") {
        if let Some(pattern) = string(image, &fields.path("image"), report) {
            patterns.extend(glob::translate(
                pattern,
                Dialect::KyvernoWildcard,
                Reading::Wide,
                &fields.path("image"),
                report,
            ));
        }
    }
    // Skipped images are let through unchecked: only those Kyverno surely skips.
    let skipped = fields.get("skipImageReferences").map(|value| {
        let skip_path = fields.path("skipImageReferences");
        let mut skipped = Vec::new();
        for (i, pattern) in strings(value, &skip_path, report).into_iter().enumerate() {
            skipped.extend(glob::translate(
                &pattern,
                Dialect::KyvernoWildcard,
                Reading::Narrow,
                &index(&skip_path, i),
                report,
            ));
        }
        skipped
    });
    dedup(&mut patterns);
    (patterns, skipped)
}

/// Drops repeated globs, keeping the first.
fn dedup(images: &mut Vec<DraftImage>) {
    let mut seen = Vec::new();
    images.retain(|image| {
        if seen.contains(&image.glob) {
            return false;
        }
        seen.push(image.glob.clone());
        true
    });
}
