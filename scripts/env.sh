# Shared by the scripts: where builds and models are cached, and where the binary is.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/seesay/target}"
export SEESAY="$CARGO_TARGET_DIR/release/seesay"
