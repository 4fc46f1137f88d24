# Independent check of the reference CSVs (does not use VGAM or glm).
# For each reference, reads the data and the *_measures.csv, then in the irtpeer
# parameterisation (free parameters: all theta, first E-1 elements of each facet,
# first K-1 thresholds; last element = -sum of the others) computes
#   * the log-likelihood at the CSV estimates (vs *_loglik.csv),
#   * the max |score| (gradient) at the CSV estimates (should be ~0 at the MLE), and
#     the max |Newton step| I^-1 g (distance of the CSV estimates from the exact MLE),
#   * the SEs from the inverse Fisher information (= observed information: the
#     adjacent-category logit model is a canonical exponential family), mapped to all
#     elements, vs the CSV se column.
# Produced with: R version 4.2.2 Patched (2022-11-10 r83330)
# Run from repo root: Rscript tests/references/check_references.R
suppressWarnings(Sys.setlocale("LC_COLLATE", "C"))

check_one <- function(name, d, person, facets, dim_label = "all") {
  m <- read.csv(sprintf("tests/references/%s_measures.csv", name), colClasses = c(element = "character"))
  m <- m[m$dimension == dim_label, ]
  ll_ref <- read.csv(sprintf("tests/references/%s_loglik.csv", name))
  ll_ref <- ll_ref$loglik[ll_ref$dimension == dim_label]
  cats <- sort(unique(d$score)); K <- length(cats) - 1
  y <- match(d$score, cats) - 1  # 0..K
  n <- nrow(d)
  get <- function(f) { x <- m[m$facet == f, ]; setNames(x$measure, x$element) }
  getse <- function(f) { x <- m[m$facet == f, ]; setNames(x$se, x$element) }
  # design for eta (free params) and full mapping
  vars <- c(person, facets)
  Zs <- list(); Ms <- list(); eta <- numeric(n); se_ref <- c(); 
  for (v in vars) {
    lev <- sort(unique(as.character(d[[v]])))
    est <- get(v)[lev]; stopifnot(!any(is.na(est)))
    se_ref <- c(se_ref, getse(v)[lev])
    idx <- match(as.character(d[[v]]), lev)
    E <- length(lev)
    if (v == person) {
      eta <- eta + est[idx]
      Z <- matrix(0, n, E); Z[cbind(1:n, idx)] <- 1
      M <- diag(E)
    } else {
      stopifnot(abs(sum(est)) < 1e-9)
      eta <- eta - est[idx]
      Z <- matrix(0, n, E - 1)
      Z[cbind(which(idx < E), idx[idx < E])] <- -1
      Z[idx == E, ] <- 1
      M <- rbind(diag(E - 1), -1)
    }
    Zs[[v]] <- Z; Ms[[v]] <- M
  }
  Z <- do.call(cbind, Zs)
  tau <- if (K >= 2) get("threshold")[as.character(cats[-1])] else 0
  if (K >= 2) { stopifnot(abs(sum(tau)) < 1e-9); se_ref <- c(se_ref, getse("threshold")[as.character(cats[-1])]) }
  C <- c(0, cumsum(tau))
  lp <- outer(eta, 0:K) - matrix(C, n, K + 1, byrow = TRUE)
  mx <- apply(lp, 1, max)
  lse <- mx + log(rowSums(exp(lp - mx)))
  P <- exp(lp - lse)
  ll <- sum(lp[cbind(1:n, y + 1)] - lse)
  ks <- 0:K
  Ex <- drop(P %*% ks); Vx <- drop(P %*% ks^2) - Ex^2
  g <- drop(crossprod(Z, y - Ex))
  I <- crossprod(Z * Vx, Z)
  if (K >= 2) {
    # d lp_k / d tau_h (h < K, free): -1[h <= k] + 1[K <= k]
    Tm <- matrix(0, K + 1, K - 1)
    for (h in 1:(K - 1)) Tm[, h] <- -(ks >= h) + (ks >= K)
    Et <- P %*% Tm
    gt <- colSums(Tm[y + 1, , drop = FALSE] - Et)
    Cxt <- (P * matrix(ks, n, K + 1, byrow = TRUE)) %*% Tm - Ex * Et
    Itt <- t(Tm) %*% diag(colSums(P)) %*% Tm - crossprod(Et)
    Izt <- crossprod(Z, Cxt)
    I <- rbind(cbind(I, Izt), cbind(t(Izt), Itt))
    g <- c(g, gt)
    Ms[["threshold"]] <- rbind(diag(K - 1), -1)
  }
  Mfull <- as.matrix(Matrix::bdiag(Ms))
  Vfree <- solve(I)
  se <- sqrt(diag(Mfull %*% Vfree %*% t(Mfull)))
  res <- data.frame(reference = name, dimension = dim_label, n_obs = n,
                    loglik_csv = ll_ref, loglik_recomputed = ll,
                    max_abs_score = max(abs(g)),
                    max_abs_newton_step = max(abs(Vfree %*% g)),
                    max_abs_se_diff = max(abs(se - se_ref)),
                    max_rel_se_diff = max(abs(se - se_ref) / se_ref))
  print(res, digits = 6)
  res
}

out <- list()
d <- read.csv("tests/data/binary_small.csv")
out[[1]] <- check_one("binary_small", d, "model", c("question", "judge", "item"))
d <- read.csv("tests/data/rsm_small.csv")
out[[2]] <- check_one("rsm_small", d, "model", c("question", "judge"))
if (file.exists("tests/references/guilford_measures.csv")) {
  d <- read.csv("/work/shared/data/guilford_ratings_long.csv"); d$score <- d$rating
  out[[3]] <- check_one("guilford", d, "junior_label", c("senior_label", "trait_id"))
}
if (file.exists("tests/references/hanna_measures.csv")) {
  d <- read.csv("/work/shared/data/hanna_long.csv", stringsAsFactors = FALSE)
  d <- d[!is.na(d$score_rounded), ]; d$score <- d$score_rounded
  for (dim in sort(unique(d$dimension)))
    out[[length(out) + 1]] <- check_one("hanna", d[d$dimension == dim, ], "model", c("question", "judge"), dim)
}
if (file.exists("tests/references/verbagg_measures.csv")) {
  d <- read.csv("/work/shared/data/verbagg_long.csv", stringsAsFactors = FALSE)
  d$score <- as.integer(d$r2 == "Y")
  s <- tapply(d$score, d$id, mean); keep <- names(s)[s > 0 & s < 1]
  d <- d[as.character(d$id) %in% keep, ]
  out[[length(out) + 1]] <- check_one("verbagg", d, "id", "item")
}
res <- do.call(rbind, out)
res$loglik_csv <- sprintf("%.12g", res$loglik_csv)
res$loglik_recomputed <- sprintf("%.12g", res$loglik_recomputed)
for (c in c("max_abs_score", "max_abs_newton_step", "max_abs_se_diff", "max_rel_se_diff")) res[[c]] <- sprintf("%.3g", res[[c]])
write.csv(res, "tests/references/check_results.csv", row.names = FALSE, quote = FALSE)
