# Reference: guilford (Guilford 1954 creativity ratings; FACETS manual example) --
# Andrich rating scale, exact MLE via VGAM::vglm acat. Person = junior_label (examinee),
# facets senior_label (judge) and trait_id (trait), both centred; examinees float.
# Produced with: R version 4.2.2 Patched (2022-11-10 r83330); VGAM 1.1.7
# Run from repo root: Rscript tests/references/guilford.R
source("tests/references/mfrm_ref.R")
if (!file.exists("/work/shared/data/guilford_ratings_long.csv")) stop("data not found")
d <- read.csv("/work/shared/data/guilford_ratings_long.csv", stringsAsFactors = FALSE)
d$score <- d$rating
cat("observed categories:", paste(sort(unique(d$score)), collapse = " "), "\n")
r <- fit_rsm(d, person = "junior_label", facets = c("senior_label", "trait_id"))
write_measures(r$measures, "tests/references/guilford_measures.csv")
write_loglik(r$loglik, "tests/references/guilford_loglik.csv")
cat(version_line("VGAM"), "\n")
