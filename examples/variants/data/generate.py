"""How data/ was made (run once; its outputs are committed, nothing in the pipeline runs it).

A random 300 bp reference and, per sample, 90 reads of 32 bp drawn from it with a few planted
variants (heterozygous: every other read covering the site carries the alternative base;
homozygous: every read) and a 1 % sequencing error rate. Deterministic: a fixed seed.
"""

import random
from pathlib import Path

HERE = Path(__file__).parent
rng = random.Random(20261122)
ref = "".join(rng.choice("ACGT") for _ in range(300))
(HERE / "ref.fa").write_text(">chr1 toy reference\n" + "\n".join(ref[i:i + 60] for i in range(0, 300, 60)) + "\n")

# sample -> {0-based position: (alt base, "het" | "hom")}
PLANTED = {
    "A": {60: "het", 150: "hom", 230: "het"},
    "B": {60: "het", 200: "hom"},
    "C": {100: "het", 150: "hom"},
}
READ_LEN, N_READS = 32, 90


def alt(base: str) -> str:
    return "ACGT"[("ACGT".index(base) + 2) % 4]   # A<->G, C<->T: transitions


for sample, sites in PLANTED.items():
    srng = random.Random(sample)
    lines, covering = [], {pos: 0 for pos in sites}
    for n in range(N_READS):
        start = srng.randrange(0, len(ref) - READ_LEN + 1)
        read = list(ref[start:start + READ_LEN])
        for pos, kind in sites.items():
            if start <= pos < start + READ_LEN:
                covering[pos] += 1
                if kind == "hom" or covering[pos] % 2 == 0:
                    read[pos - start] = alt(ref[pos])
        for i in range(READ_LEN):
            if srng.random() < 0.01:
                read[i] = srng.choice([b for b in "ACGT" if b != read[i]])
        qual = "".join(chr(33 + srng.randint(25, 40)) for _ in range(READ_LEN))
        lines += [f"@{sample}.{n + 1}", "".join(read), "+", qual]
    (HERE / "reads" / f"{sample}.fq").write_text("\n".join(lines) + "\n")
