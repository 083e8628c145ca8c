#!/bin/sh
# Writes the input of the image's dependency layer to DEST: Cargo.lock, every
# package's Cargo.toml, and an empty stub for each target root cargo needs to
# find (libraries, binaries, build scripts, benches, examples, tests). The
# result changes only when a manifest or the lock changes, so the layer that
# builds dependencies from it stays cached while the code changes. The same
# job as cargo-chef's `prepare`, without a tool to install.
set -eu
dest=$1
mkdir -p "$dest"
cp Cargo.lock "$dest/Cargo.lock"
find . -path ./target -prune -o -name Cargo.toml -print | sort | while read -r manifest; do
    dir=$(dirname "$manifest")
    mkdir -p "$dest/$dir"
    cp "$manifest" "$dest/$manifest"
    for target in "$dir"/src/lib.rs "$dir"/src/main.rs "$dir"/build.rs \
        "$dir"/src/bin/*.rs "$dir"/benches/*.rs "$dir"/examples/*.rs "$dir"/tests/*.rs; do
        [ -f "$target" ] || continue
        mkdir -p "$dest/$(dirname "$target")"
        case "$target" in
            */src/lib.rs) : >"$dest/$target" ;;
            *) echo 'fn main() {}' >"$dest/$target" ;;
        esac
    done
done
