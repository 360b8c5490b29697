cp /tmp/smk.log $OUT/ 2>/dev/null
tar czf $OUT/res.tgz results/*/report results/*/tune results/*/train/*/seed*/run.json results/*/train/*/seed*/history.csv results/*/eval results/verify logs .snakemake/log 2>/dev/null
grep -c "Finished job" /tmp/smk.log; grep -B2 -A3 "Error in rule" /tmp/smk.log | grep -E "rule|log:" | head -20
tail -4 /tmp/smk.log
