"""Round 21: a second data folder from the first one's scenes, split by font: train on 9 of the 13
look-alike fonts, test on the other 4 (caveat-brush, dancing-script, marck-script, poor-story:
every third in sorted order, from the second). `lookalike.py folder` draws font `index % 13` of the
sorted families, so the split needs no rendering; the images are linked, not copied."""
import csv
import sys
from pathlib import Path

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
held = {1, 4, 7, 10}  # index % 13 of the test fonts
rows = list(csv.reader(open(src / "dirty_mnist_2nd_answer.csv")))
header, body = rows[0], rows[1:]
train = [r for r in body if int(r[0]) % 13 not in held]
test = [r for r in body if int(r[0]) % 13 in held][:1500]
for name, part in (("dirty_mnist_2nd", train), ("test_dirty_mnist_2nd", test)):
    (dst / name).mkdir(parents=True, exist_ok=True)
    for r in part:
        (dst / name / f"{int(r[0]):05d}.png").symlink_to(src / "dirty_mnist_2nd" / f"{int(r[0]):05d}.png")
for name, part in (("dirty_mnist_2nd_answer.csv", train), ("test_answer.csv", test),
                   ("sample_submission.csv", [[r[0]] + ["0"] * 26 for r in test])):
    with open(dst / name, "w", newline="") as f:
        csv.writer(f).writerows([header, *part])
print(f"{len(train)} train scenes (9 fonts), {len(test)} test scenes (4 other fonts) in {dst}")
