# call: joint variant calls over every sample's counts (what `bcftools mpileup | bcftools call`
# does, without a statistical model): a site is called where some sample has at least min_depth
# reads and a fraction of at least min_frac of them carry the site's alternative base (the
# non-reference base seen most often over all samples; ties in A, C, G, T order).
# Usage: awk -v min_frac=0.3 -v min_depth=4 -f call.awk counts/A.tsv counts/B.tsv ... > calls.vcf
# Genotypes: ./. below min_depth, 0/0 below min_frac, 1/1 from 1 - min_frac, else 0/1.
BEGIN { OFS = "\t"; split("A C G T", bases, " ") }
FNR == 1 {
    name = FILENAME; sub(/.*\//, "", name); sub(/\.[^.]*$/, "", name)
    sample[++n_samples] = name
    next
}
{
    row = FNR - 1; if (row > n_rows) n_rows = row
    chrom[row] = $1; pos[row] = $2; ref[row] = $3
    depth[n_samples, row] = $4
    for (b = 1; b <= 4; b++) count[n_samples, row, bases[b]] = $(4 + b)
}
END {
    print "##fileformat=VCFv4.2"
    print "##source=sci examples/variants (awk)"
    print "##min_frac=" min_frac
    print "##min_depth=" min_depth
    print "##INFO=<ID=DP,Number=1,Type=Integer,Description=\"Depth over all samples\">"
    print "##INFO=<ID=AF,Number=A,Type=Float,Description=\"Alternative base fraction over all samples\">"
    print "##FORMAT=<ID=GT,Number=1,Type=String,Description=\"Genotype\">"
    print "##FORMAT=<ID=AD,Number=R,Type=Integer,Description=\"Reads with the reference and the alternative base\">"
    print "##FORMAT=<ID=DP,Number=1,Type=Integer,Description=\"Depth\">"
    header = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT"
    for (s = 1; s <= n_samples; s++) header = header OFS sample[s]
    print header
    for (r = 1; r <= n_rows; r++) {
        alt = ""; best = 0
        for (b = 1; b <= 4; b++) {
            if (bases[b] == ref[r]) continue
            total = 0
            for (s = 1; s <= n_samples; s++) total += count[s, r, bases[b]]
            if (total > best) { best = total; alt = bases[b] }
        }
        if (alt == "") continue
        called = 0; dp = 0; ad = 0; fields = ""
        for (s = 1; s <= n_samples; s++) {
            d = depth[s, r]; a = count[s, r, alt]; rf = count[s, r, ref[r]]
            dp += d; ad += a
            if (d < min_depth) gt = "./."
            else if (a / d < min_frac) gt = "0/0"
            else { called = 1; gt = (a / d >= 1 - min_frac) ? "1/1" : "0/1" }
            fields = fields OFS gt ":" rf "," a ":" d
        }
        if (called) print chrom[r], pos[r], ".", ref[r], alt, ".", "PASS", sprintf("DP=%d;AF=%.3f", dp, ad / dp), "GT:AD:DP" fields
    }
}
