# map: align FASTQ reads to a FASTA reference, ungapped, seeded by an exact k-mer match.
# Usage: awk -v k=12 -v max_mm=2 -f map.awk ref.fa reads.fq > sample.sam.tsv
# The read's first k bases (else its last k) must occur exactly once in the reference; the
# read is then compared base by base there and kept with at most max_mm mismatches.
# Output, one line per read (a SAM subset, tab-separated):
#   QNAME FLAG RNAME POS(1-based) MAPQ CIGAR SEQ NM      (unmapped: FLAG 4, RNAME *, POS 0)
BEGIN { OFS = "\t" }
FNR == NR {                                   # the reference
    if (/^>/) { chrom = substr($1, 2); order[++n_chrom] = chrom; next }
    seq[chrom] = seq[chrom] $0
    next
}
FNR == 1 {                                    # first read: index every k-mer of the reference
    for (c = 1; c <= n_chrom; c++) {
        name = order[c]; s = seq[name]
        for (p = 1; p + k - 1 <= length(s); p++) {
            kmer = substr(s, p, k)
            hits[kmer]++; where[kmer] = name SUBSEP p
        }
    }
}
FNR % 4 == 1 { qname = substr($1, 2); next }
FNR % 4 == 2 {
    read = $0; len = length(read); placed = 0
    if (hits[substr(read, 1, k)] == 1) {
        split(where[substr(read, 1, k)], at, SUBSEP); placed = 1; start = at[2]
    } else if (hits[substr(read, len - k + 1)] == 1) {
        split(where[substr(read, len - k + 1)], at, SUBSEP); placed = 1; start = at[2] - (len - k)
    }
    if (placed && start >= 1 && start + len - 1 <= length(seq[at[1]])) {
        mm = 0; target = substr(seq[at[1]], start, len)
        for (i = 1; i <= len; i++) if (substr(read, i, 1) != substr(target, i, 1)) mm++
        if (mm <= max_mm) { print qname, 0, at[1], start, 60, len "M", read, "NM:i:" mm; next }
    }
    print qname, 4, "*", 0, 0, "*", read, "NM:i:0"
}
