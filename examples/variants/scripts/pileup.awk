# index: per-position base counts of sorted alignments (what `samtools index` + mpileup give).
# Usage: awk -f pileup.awk ref.fa sample.sorted.tsv > sample.counts.tsv
# Output: one line per reference position, in reference order, depth 0 included:
#   CHROM POS REF DEPTH A C G T
BEGIN { OFS = "\t"; split("A C G T", bases, " ") }
FNR == NR {
    if (/^>/) { chrom = substr($1, 2); order[++n_chrom] = chrom; next }
    seq[chrom] = seq[chrom] $0
    next
}
$2 != 4 {                                     # mapped reads only
    for (i = 1; i <= length($7); i++) count[$3, $4 + i - 1, substr($7, i, 1)]++
}
END {
    print "#CHROM", "POS", "REF", "DEPTH", "A", "C", "G", "T"
    for (c = 1; c <= n_chrom; c++) {
        name = order[c]
        for (p = 1; p <= length(seq[name]); p++) {
            line = ""; depth = 0
            for (b = 1; b <= 4; b++) { n = count[name, p, bases[b]] + 0; depth += n; line = line OFS n }
            print name, p, substr(seq[name], p, 1), depth line
        }
    }
}
