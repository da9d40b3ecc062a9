//! QR codes for a person at a terminal.

use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};

/// The QR code of `code` in terminal characters, black on white whatever the terminal's
/// colours (each line sets them with ANSI escapes), with its quiet zone, two modules per
/// character cell. Level L, as WhatsApp's own QR codes: the payload is long, and a lower
/// level keeps the symbol small enough for a terminal.
pub fn qr_lines(code: &str) -> Option<String> {
    let qr = QrCode::with_error_correction_level(code.as_bytes(), EcLevel::L).ok()?;
    let art = qr
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Dark)
        .light_color(Dense1x2::Light)
        .quiet_zone(true)
        .build();
    Some(
        art.lines()
            .map(|line| format!("\x1b[30;47m{line}\x1b[0m\n"))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_black_on_white_and_as_wide_as_the_symbol() {
        let lines = qr_lines("2@example,abc,def,ghi").unwrap();
        let widths: Vec<usize> = lines
            .lines()
            .map(|l| {
                assert!(l.starts_with("\x1b[30;47m") && l.ends_with("\x1b[0m"), "{l:?}");
                l.trim_start_matches("\x1b[30;47m")
                    .trim_end_matches("\x1b[0m")
                    .chars()
                    .count()
            })
            .collect();
        assert!(widths.iter().all(|w| *w == widths[0]));
        // Modules plus a quiet zone of 4 on each side; two rows per line.
        assert!(widths[0] >= 21 + 8);
        assert_eq!(widths.len(), widths[0].div_ceil(2));
    }
}
