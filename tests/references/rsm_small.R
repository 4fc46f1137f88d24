# Reference: rsm_small (Andrich rating scale, 2 facets) -- exact MLE via VGAM::vglm acat.
# Produced with: R version 4.2.2 Patched (2022-11-10 r83330); VGAM 1.1.7
# Run from repo root: Rscript tests/references/rsm_small.R
source("tests/references/mfrm_ref.R")
d <- read.csv("tests/data/rsm_small.csv", stringsAsFactors = FALSE)
r <- fit_rsm(d, person = "model", facets = c("question", "judge"))
write_measures(r$measures, "tests/references/rsm_small_measures.csv")
write_loglik(r$loglik, "tests/references/rsm_small_loglik.csv")
cat(version_line("VGAM"), "\n")
