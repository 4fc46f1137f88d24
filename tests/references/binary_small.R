# Reference: binary_small (binary Rasch, 3 facets) -- exact MLE via glm with sum contrasts.
# Produced with: R version 4.2.2 Patched (2022-11-10 r83330); stats 4.2.2
# Run from repo root: Rscript tests/references/binary_small.R
source("tests/references/mfrm_ref.R")
d <- read.csv("tests/data/binary_small.csv", stringsAsFactors = FALSE)
r <- fit_binary(d, person = "model", facets = c("question", "judge", "item"))
write_measures(r$measures, "tests/references/binary_small_measures.csv")
write_loglik(r$loglik, "tests/references/binary_small_loglik.csv")
cat(version_line("stats"), "\n")
