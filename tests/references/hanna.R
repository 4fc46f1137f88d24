# Reference: hanna (HANNA story ratings, 11 systems x 96 prompts x 23 judges, 6 criteria) --
# Andrich rating scale per dimension, exact MLE via VGAM::vglm acat.
# Per dimension: rows with missing score_rounded dropped; score = score_rounded (1-5);
# person = model; facets question, judge (item is 1:1 with dimension, left out).
# Produced with: R version 4.2.2 Patched (2022-11-10 r83330); VGAM 1.1.7
# Run from repo root: Rscript tests/references/hanna.R
source("tests/references/mfrm_ref.R")
path <- "/work/shared/data/hanna_long.csv"
if (!file.exists(path)) stop("data not found: ", path)
d <- read.csv(path, stringsAsFactors = FALSE)
d <- d[!is.na(d$score_rounded), ]
d$score <- d$score_rounded
ms <- list(); ls <- list()
for (dim in sort(unique(d$dimension))) {
  r <- fit_rsm(d[d$dimension == dim, ], person = "model", facets = c("question", "judge"),
               dim_label = dim)
  ms[[dim]] <- r$measures; ls[[dim]] <- r$loglik
  rm(r); gc(verbose = FALSE)
}
write_measures(do.call(rbind, ms), "tests/references/hanna_measures.csv")
write_loglik(do.call(rbind, ls), "tests/references/hanna_loglik.csv")
cat(version_line("VGAM"), "\n")
