//! Applies layer files to a directory: `unpack DEST LAYER...` (flattened,
//! whiteouts applied). For measuring the unpacker by hand.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((dest, layers)) = args.split_first() else {
        eprintln!("usage: unpack DEST LAYER...");
        std::process::exit(2);
    };
    let opts = hako_image::unpack::UnpackOptions {
        whiteouts: hako_image::unpack::WhiteoutMode::Apply,
    };
    for l in layers {
        let file = match std::fs::File::open(l) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("{l}: {e}");
                std::process::exit(1);
            }
        };
        match hako_image::unpack::apply_layer_file(std::path::Path::new(dest), file, &opts) {
            Ok(s) => println!(
                "{l}: {} entries, {} bytes, {}",
                s.entries, s.tar_bytes, s.diff_id
            ),
            Err(e) => {
                eprintln!("{l}: {e}");
                std::process::exit(1);
            }
        }
    }
}
