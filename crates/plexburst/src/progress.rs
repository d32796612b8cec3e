//! Pure progress maths over samples: rate, ETA, stable-for-N, stall and timeout verdicts.
