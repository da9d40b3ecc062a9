//! A pairing QR code for a person at a terminal.

use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};

/// Error correction of WhatsApp's own pairing QR codes (and of the terminal QR codes its
/// libraries print): the payload is long, and a lower level keeps the symbol small enough for a
/// terminal and quick to scan from a screen.
pub const EC_LEVEL: EcLevel = EcLevel::L;

/// The QR code of `code` in terminal characters: two modules per character cell, with its
/// quiet zone, each line set black on white with ANSI escapes, so it scans from a dark and from
/// a light terminal alike. `None` when `code` does not fit in a QR code.
pub fn terminal_text(code: &str) -> Option<String> {
    let qr = QrCode::with_error_correction_level(code.as_bytes(), EC_LEVEL).ok()?;
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
        let lines = terminal_text("2@example,abc,def,ghi").unwrap();
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
