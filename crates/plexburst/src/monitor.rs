//! Samples (DB counts, activities, CPU) -> progress lines/bars and phase verdicts.
