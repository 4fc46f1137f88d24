# Shared helpers for the irtpeer exact-MLE reference fits (sourced by the other scripts).
# Model (irtpeer convention):
#   binary:  logit P(x=1) = theta_p - sum_f b_{f,e_f}
#   RSM:     log P(x=k)/P(x=k-1) = theta_p - sum_f b_{f,e_f} - tau_k,  k = 1..K
# Identification: each non-person facet sums to 0, sum_k tau_k = 0, persons float.
# Fits use sum-to-zero contrasts for person and every facet; mapped parameters are
# linear functions L' beta of the coefficient vector; se = sqrt(diag(L V L')).
suppressWarnings(Sys.setlocale("LC_COLLATE", "C"))

fmt12 <- function(x) sprintf("%.12g", x)

# Rows of L for a sum-coded factor `var` with levels `lev`: effect of level e.
# sign = +1 -> effect itself, -1 -> minus the effect.
sumcoded_rows <- function(var, lev, cn, sign = 1) {
  n <- length(lev)
  L <- matrix(0, n, length(cn), dimnames = list(lev, cn))
  nm <- paste0(var, seq_len(n - 1))
  stopifnot(all(nm %in% cn))
  for (e in seq_len(n - 1)) L[e, nm[e]] <- sign
  L[n, nm] <- -sign
  L
}

prep <- function(d, person, facets) {
  d[[person]] <- factor(as.character(d[[person]]))
  for (f in facets) d[[f]] <- factor(as.character(d[[f]]))
  d
}

contr_list <- function(person, facets) {
  cl <- rep(list("contr.sum"), length(facets) + 1)
  names(cl) <- c(person, facets)
  cl
}

check_extremes <- function(d, y, vars) {
  for (v in vars) {
    r <- tapply(y, d[[v]], function(s) min(s) == max(s))
    if (any(r)) stop("extreme element(s) in ", v, ": ", paste(names(r)[r], collapse = ", "))
  }
}

# Binary Rasch via glm ------------------------------------------------------
fit_binary <- function(d, person, facets, dim_label = "all") {
  d <- prep(d, person, facets)
  check_extremes(d, d$score, c(person, facets))
  fo <- as.formula(paste("score ~", paste(c(person, facets), collapse = " + ")))
  t0 <- proc.time()[["elapsed"]]
  fit <- glm(fo, family = binomial, data = d, contrasts = contr_list(person, facets),
             control = glm.control(epsilon = 1e-14, maxit = 100))
  secs <- proc.time()[["elapsed"]] - t0
  beta <- coef(fit)
  stopifnot(!any(is.na(beta)), fit$converged)
  cn <- names(beta)
  V <- vcov(fit)
  Lp <- sumcoded_rows(person, levels(d[[person]]), cn, +1)
  Lp[, "(Intercept)"] <- 1
  Ls <- list(Lp); meta <- data.frame(facet = person, element = levels(d[[person]]))
  for (f in facets) {
    Ls[[length(Ls) + 1]] <- sumcoded_rows(f, levels(d[[f]]), cn, -1)
    meta <- rbind(meta, data.frame(facet = f, element = levels(d[[f]])))
  }
  L <- do.call(rbind, Ls)
  est <- drop(L %*% beta)
  se <- sqrt(diag(L %*% V %*% t(L)))
  # mapping check: recompute P(x=1) from mapped parameters
  th <- est[seq_len(nlevels(d[[person]]))]; names(th) <- levels(d[[person]])
  eta <- th[as.character(d[[person]])]
  off <- nlevels(d[[person]])
  for (f in facets) {
    b <- est[off + seq_len(nlevels(d[[f]]))]; names(b) <- levels(d[[f]])
    eta <- eta - b[as.character(d[[f]])]
    off <- off + nlevels(d[[f]])
  }
  maxdiff <- max(abs(plogis(eta) - fitted(fit)))
  cat(sprintf("[%s] glm: n=%d, p=%d, logLik=%.10f, iter=%d, %.2fs, mapping check max|dP|=%.3g\n",
              dim_label, nrow(d), length(beta), as.numeric(logLik(fit)), fit$iter, secs, maxdiff))
  stopifnot(maxdiff < 1e-8)
  list(measures = data.frame(dimension = dim_label, facet = meta$facet, element = meta$element,
                             measure = est, se = se),
       loglik = data.frame(dimension = dim_label, loglik = as.numeric(logLik(fit)),
                           n_obs = nrow(d), n_par = length(beta), seconds = secs,
                           mapping_check_max_abs_diff = maxdiff, iterations = fit$iter),
       fit = fit)
}

# Andrich rating scale via VGAM::vglm(acat(parallel = TRUE, reverse = FALSE)) -------------
fit_rsm <- function(d, person, facets, dim_label = "all", maxit = 100) {
  suppressPackageStartupMessages(library(VGAM))
  d <- prep(d, person, facets)
  cats <- sort(unique(d$score))
  K <- length(cats) - 1
  d$y <- factor(d$score, levels = cats, ordered = TRUE)
  check_extremes(d, as.integer(d$y), c(person, facets))
  fo <- as.formula(paste("y ~", paste(c(person, facets), collapse = " + ")))
  t0 <- proc.time()[["elapsed"]]
  fit <- vglm(fo, family = acat(parallel = TRUE, reverse = FALSE), data = d,
              contrasts = contr_list(person, facets),
              control = vglm.control(maxit = maxit, epsilon = getOption("ref_eps", 1e-12)))
  iter1 <- fit@iter
  # Polishing refit started at the converged coefficients: VGAM's vcov() uses the working
  # weights of the last IRLS iteration (evaluated at the previous iterate); one more
  # iteration from the MLE makes vcov() exact at the MLE (changes SEs by ~1e-8 relative).
  fit0 <- fit
  fit <- vglm(fo, family = acat(parallel = TRUE, reverse = FALSE), data = d,
              contrasts = contr_list(person, facets), coefstart = coef(fit0),
              control = vglm.control(maxit = maxit, epsilon = getOption("ref_eps", 1e-12)))
  secs <- proc.time()[["elapsed"]] - t0
  stopifnot(max(abs(coef(fit) - coef(fit0))) < 1e-8)
  rm(fit0)
  beta <- coef(fit)
  stopifnot(!any(is.na(beta)))
  cn <- names(beta)
  V <- vcov(fit)
  icn <- paste0("(Intercept):", seq_len(K))
  stopifnot(all(icn %in% cn))
  # theta_p = mean_k(int_k) + person_effect_p
  Lp <- sumcoded_rows(person, levels(d[[person]]), cn, +1)
  Lp[, icn] <- 1 / K
  Ls <- list(Lp); meta <- data.frame(facet = person, element = levels(d[[person]]))
  for (f in facets) {
    Ls[[length(Ls) + 1]] <- sumcoded_rows(f, levels(d[[f]]), cn, -1)
    meta <- rbind(meta, data.frame(facet = f, element = levels(d[[f]])))
  }
  # tau_k = mean(int) - int_k ; element = original value of the upper category
  Lt <- matrix(0, K, length(cn), dimnames = list(as.character(cats[-1]), cn))
  for (k in seq_len(K)) { Lt[k, icn] <- 1 / K; Lt[k, icn[k]] <- Lt[k, icn[k]] - 1 }
  Ls[[length(Ls) + 1]] <- Lt
  meta <- rbind(meta, data.frame(facet = "threshold", element = as.character(cats[-1])))
  L <- do.call(rbind, Ls)
  est <- drop(L %*% beta)
  se <- sqrt(diag(L %*% V %*% t(L)))
  # mapping check: category probabilities from (theta, b, tau)
  np <- nlevels(d[[person]])
  th <- est[seq_len(np)]; names(th) <- levels(d[[person]])
  eta <- th[as.character(d[[person]])]
  off <- np
  for (f in facets) {
    b <- est[off + seq_len(nlevels(d[[f]]))]; names(b) <- levels(d[[f]])
    eta <- eta - b[as.character(d[[f]])]
    off <- off + nlevels(d[[f]])
  }
  tau <- est[off + seq_len(K)]
  lp <- outer(eta, 0:K) - matrix(c(0, cumsum(tau)), length(eta), K + 1, byrow = TRUE)
  lp <- lp - apply(lp, 1, max)
  P <- exp(lp); P <- P / rowSums(P)
  maxdiff <- max(abs(P - fitted(fit)))
  conv <- isTRUE(iter1 < maxit)
  cat(sprintf("[%s] vglm acat: n=%d, K=%d, categories={%s}, p=%d, logLik=%.10f, iter=%d, %.2fs, mapping check max|dP|=%.3g\n",
              dim_label, nrow(d), K, paste(cats, collapse = ","), length(beta),
              as.numeric(logLik(fit)), iter1, secs, maxdiff))
  stopifnot(maxdiff < 1e-8, conv)
  list(measures = data.frame(dimension = dim_label, facet = meta$facet, element = meta$element,
                             measure = est, se = se),
       loglik = data.frame(dimension = dim_label, loglik = as.numeric(logLik(fit)),
                           n_obs = nrow(d), n_par = length(beta), seconds = secs,
                           mapping_check_max_abs_diff = maxdiff, iterations = iter1,
                           categories = paste(cats, collapse = " ")),
       fit = fit)
}

write_measures <- function(m, path) {
  m$measure <- fmt12(m$measure); m$se <- fmt12(m$se)
  write.csv(m, path, row.names = FALSE, quote = FALSE)
}
write_loglik <- function(l, path) {
  l$loglik <- fmt12(l$loglik)
  l$seconds <- sprintf("%.2f", l$seconds)
  l$mapping_check_max_abs_diff <- sprintf("%.3g", l$mapping_check_max_abs_diff)
  write.csv(l, path, row.names = FALSE, quote = FALSE)
}
version_line <- function(pkgs = character()) {
  s <- R.version.string
  for (p in pkgs) s <- paste0(s, "; ", p, " ", as.character(packageVersion(p)))
  s
}
