/**
 * Defaults shared by modules that must not import each other (the model's context sizes its logit-lens buffers
 * by what the exit code asks for). Leaf module: imports nothing.
 */

/** Fast logit lens without fixed candidates: how many of a token's first-check top tokens it keeps. */
export const DEFAULT_FAST_TOP_K = 16;
