"""Fetch the bundled handwriting fonts from npm's @fontsource packages (run once, commit the result).

    python scripts/fetch_fonts.py [--dest src/dirtymnist/glyphs/fonts]
    python scripts/fetch_fonts.py --dest DIR --families gaegu,itim --hangul gaegu   # other fonts
    python scripts/fetch_fonts.py --dest DIR --weights-fonts   # the extra hands of the ready weights

For each family: `npm pack @fontsource/<family>` in a temp dir, untar, keep the latin 400
normal woff2 and the LICENSE. Only OFL-1.1 / Apache-2.0 packages are kept. A few Korean
subsets of nanum-pen-script are kept for the Hangul distractors: Google's slicing puts the
most frequent syllables in the highest-numbered subsets, so those are taken. Writes SOURCES.md listing family, package version and licence.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

FAMILIES = (
    "caveat", "kalam", "patrick-hand", "indie-flower", "gloria-hallelujah", "handlee",
    "gochi-hand", "architects-daughter", "covered-by-your-grace", "shadows-into-light",
    "neucha", "short-stack", "schoolbell", "permanent-marker", "rock-salt", "mansalva",
    "nanum-pen-script", "reenie-beanie", "just-another-hand", "coming-soon", "dekko",
    "sue-ellen-francisco", "waiting-for-the-sunrise", "nothing-you-could-do",
    "the-girl-next-door", "homemade-apple", "la-belle-aurore", "swanky-and-moo-moo", "zeyada",
    "delius", "annie-use-your-telescope",
)  # fmt: skip
# Hands the offline links of `ready.256px13` also trained on (issue 14, rounds 15-18): never
# bundled (in the generator they make the demo's own data harder, round 8), never a held-out
# family or a look-alike font (tests/test_lookalike.py). Round 15's 18, round 16's 29, round 17's 34.
WEIGHTS_FAMILIES = (
    "satisfy", "kaushan-script", "courgette", "cookie", "bad-script", "yellowtail", "sacramento",
    "mr-dafoe", "loved-by-the-king", "over-the-rainbow", "just-me-again-down-here", "sedgwick-ave",
    "gamja-flower", "east-sea-dokdo", "edu-sa-beginner", "mynerve", "pangolin", "grape-nuts",
    "walter-turncoat", "crafty-girls", "rancho", "fuzzy-bubbles", "mali", "chilanka", "kristi",
    "give-you-glory", "dawning-of-a-new-day", "calligraffitti", "unkempt", "happy-monkey",
    "edu-qld-beginner", "edu-tas-beginner", "edu-nsw-act-foundation", "edu-vic-wa-nt-beginner",
    "square-peg", "ruge-boogie", "long-cang", "zhi-mang-xing", "merienda", "hi-melody",
    "single-day", "cute-font", "allura", "pacifico", "delius-swash-caps", "shadows-into-light-two",
    "sofadi-one",
    "birthstone-bounce", "butterfly-kids", "caramel", "charm", "comforter", "delius-unicase",
    "edu-au-vic-wa-nt-hand", "edu-au-vic-wa-nt-pre", "edu-nsw-act-cursive", "edu-qld-hand",
    "edu-sa-hand", "edu-vic-wa-nt-hand", "finger-paint", "gluten", "grandstander", "hachi-maru-pop",
    "kavivanar", "kirang-haerang", "klee-one", "kodchasan", "liu-jian-mao-cao",
    "love-ya-like-a-sister", "ma-shan-zheng", "meddon", "montez", "mystery-quest", "nerko-one",
    "oooh-baby", "patrick-hand-sc", "redressed", "sniglet", "sunshiney", "yomogi", "zen-kurenaido",
)  # fmt: skip
HANGUL_FAMILY = "nanum-pen-script"
HANGUL_FILES = 6  # ~30 KB each
ALLOWED_LICENCES = ("OFL-1.1", "Apache-2.0")
MAX_TOTAL_BYTES = 3_000_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dest = Path(__file__).resolve().parents[1] / "src/dirtymnist/glyphs/fonts"
    parser.add_argument("--dest", type=Path, default=default_dest)
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated @fontsource families")
    parser.add_argument("--hangul", default=HANGUL_FAMILY, help="families whose Hangul subsets are kept too")
    parser.add_argument(
        "--weights-fonts", action="store_true",
        help="the 81 extra hands the ready weights' links trained on (--families and --hangul ignored)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.weights_fonts:
        args.families, args.hangul = ",".join(WEIGHTS_FAMILIES), ""
    hangul = set(args.hangul.split(",")) if args.hangul else set()
    dest: Path = args.dest
    dest.mkdir(parents=True, exist_ok=True)

    rows: list[tuple[str, str, str, str]] = []
    for family in args.families.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            pkg = _pack(family, Path(tmp))
            if pkg is None:
                continue
            meta = json.loads((pkg / "package.json").read_text())
            licence = str(meta.get("license", ""))
            if licence not in ALLOWED_LICENCES:
                print(f"skip {family}: licence {licence!r}", file=sys.stderr)
                continue
            woff2 = pkg / "files" / f"{family}-latin-400-normal.woff2"
            if not woff2.exists():
                print(f"skip {family}: no latin 400 normal woff2", file=sys.stderr)
                continue
            out = dest / family
            if out.exists():
                shutil.rmtree(out)
            out.mkdir()
            shutil.copy2(woff2, out / woff2.name)
            shutil.copy2(pkg / "LICENSE", out / "LICENSE")
            files = [woff2.name]
            if family in hangul:
                for f in _hangul_subsets(pkg, HANGUL_FILES):
                    shutil.copy2(f, out / f.name)
                    files.append(f.name)
            rows.append((family, str(meta.get("version", "?")), licence, ", ".join(files)))
            print(f"ok   {family} {meta.get('version')} {licence}", file=sys.stderr)

    total = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    lines = [
        "# Bundled handwriting fonts" if dest == default_dest else "# Handwriting fonts",
        "",
        "Fetched by `scripts/fetch_fonts.py` from the npm registry's `@fontsource/<family>`",
        "packages (Google Fonts). Each folder holds the font file(s) and the package's LICENSE.",
        "",
        "| family | package version | licence | files |",
        "|---|---|---|---|",
        *(f"| {f} | @fontsource/{f}@{v} | {lic} | {files} |" for f, v, lic, files in rows),
        "",
    ]
    (dest / "SOURCES.md").write_text("\n".join(lines))
    print(f"{len(rows)} families, {total / 1e6:.2f} MB in {dest}", file=sys.stderr)
    if total > MAX_TOTAL_BYTES:
        print(f"warning: bundle exceeds {MAX_TOTAL_BYTES / 1e6:.0f} MB", file=sys.stderr)
    return 0


def _pack(family: str, tmp: Path) -> Path | None:
    """`npm pack` one package into `tmp` and untar it; None (with a message) on failure."""
    try:
        proc = subprocess.run(
            ["npm", "pack", "--silent", f"@fontsource/{family}"],
            cwd=tmp, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        print(f"skip {family}: npm pack timed out", file=sys.stderr)
        return None
    tgz = sorted(tmp.glob("*.tgz"))
    if proc.returncode != 0 or not tgz:
        print(f"skip {family}: npm pack failed: {proc.stderr.strip()[:200]}", file=sys.stderr)
        return None
    with tarfile.open(tgz[0]) as tar:
        tar.extractall(tmp, filter="data")
    return tmp / "package"


def _hangul_subsets(pkg: Path, n: int) -> list[Path]:
    """The `n` highest-numbered 400-normal woff2 subsets holding >= 50 Hangul syllables each."""
    css = (pkg / "400.css").read_text()
    scored: list[tuple[int, Path]] = []
    for block in css.split("@font-face")[1:]:
        src = re.search(r"url\(\./files/([^)]+-400-normal\.woff2)\)", block)
        rng = re.search(r"unicode-range:\s*([^;]+);", block)
        if not src or not rng:
            continue
        count = 0
        for part in rng.group(1).split(","):
            lo, _, hi = part.strip().removeprefix("U+").partition("-")
            a, b = int(lo, 16), int(hi or lo, 16)
            count += max(0, min(b, 0xD7A3) - max(a, 0xAC00) + 1)
        number = re.search(r"-(\d+)-400-normal", src.group(1))
        if count >= 50 and number:
            scored.append((int(number.group(1)), pkg / "files" / src.group(1)))
    scored.sort(key=lambda t: -t[0])
    return [p for _, p in scored[:n] if p.exists()]


if __name__ == "__main__":
    raise SystemExit(main())
