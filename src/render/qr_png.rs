//! A pairing QR code as a PNG a phone can scan from a screen.

use qrcode::render::{Canvas, Pixel};
use qrcode::{Color, QrCode};

/// The QR code of `code` as a greyscale PNG of at most `size` pixels a side (uniform modules,
/// so a little smaller when `size` is not a multiple), with its quiet zone.
pub fn qr_png(code: &str, size: u32) -> Option<Vec<u8>> {
    let qr = QrCode::with_error_correction_level(code.as_bytes(), whatsapp_contract::qr::EC_LEVEL).ok()?;
    let (width, height, pixels) = qr
        .render::<Gray>()
        .quiet_zone(true)
        .max_dimensions(size, size)
        .build();
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, width, height);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().ok()?;
    writer.write_image_data(&pixels).ok()?;
    writer.finish().ok()?;
    Some(png)
}

/// An 8-bit grey pixel, for qrcode's renderer.
#[derive(Clone, Copy)]
struct Gray(u8);

/// The renderer's canvas: one byte per pixel, row by row.
struct GrayCanvas {
    width: u32,
    height: u32,
    dark: u8,
    pixels: Vec<u8>,
}

impl Pixel for Gray {
    type Image = (u32, u32, Vec<u8>);
    type Canvas = GrayCanvas;

    fn default_color(color: Color) -> Self {
        Gray(color.select(0, 255))
    }
}

impl Canvas for GrayCanvas {
    type Pixel = Gray;
    type Image = (u32, u32, Vec<u8>);

    fn new(width: u32, height: u32, dark: Gray, light: Gray) -> Self {
        Self {
            width,
            height,
            dark: dark.0,
            pixels: vec![light.0; width as usize * height as usize],
        }
    }

    fn draw_dark_pixel(&mut self, x: u32, y: u32) {
        self.pixels[y as usize * self.width as usize + x as usize] = self.dark;
    }

    fn into_image(self) -> Self::Image {
        (self.width, self.height, self.pixels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_png_is_a_square_no_larger_than_asked_with_a_light_quiet_zone() {
        let png = qr_png("2@abc,def,ghi,jkl", 400).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!(info.width, info.height);
        assert!(info.width <= 400 && info.width > 300, "{}", info.width);
        assert_eq!(info.color_type, png::ColorType::Grayscale);
        // The corners are quiet zone: light.
        assert_eq!(pixels[0], 255);
        assert_eq!(pixels[pixels.len() - 1], 255);
        assert!(pixels.contains(&0));
    }
}
