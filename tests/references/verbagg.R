# Reference: verbagg (Verbal aggression, De Boeck & Wilson 2004; lme4::VerbAgg) --
# fixed-effects (joint ML) binary Rasch: person = id, facet = item (centred), via glm
# with sum contrasts. Persons with all-0 or all-1 responses (infinite MLE) are dropped first.
# Produced with: R version 4.2.2 Patched (2022-11-10 r83330); stats 4.2.2
# Run from repo root: Rscript tests/references/verbagg.R
source("tests/references/mfrm_ref.R")
path <- "/work/shared/data/verbagg_long.csv"
if (!file.exists(path)) stop("data not found: ", path)
d <- read.csv(path, stringsAsFactors = FALSE)
d$score <- as.integer(d$r2 == "Y")
s <- tapply(d$score, d$id, mean)
ext <- names(s)[s == 0 | s == 1]
cat("dropped", length(ext), "extreme persons: ",
    paste(sprintf("%s(%s)", ext, ifelse(s[ext] == 0, "all 0", "all 1")), collapse = ", "), "\n")
d <- d[!(as.character(d$id) %in% ext), ]
r <- fit_binary(d, person = "id", facets = "item")
write_measures(r$measures, "tests/references/verbagg_measures.csv")
write_loglik(r$loglik, "tests/references/verbagg_loglik.csv")
cat(version_line("stats"), "\n")
