"""A seeded synthetic marketplace that writes a contract dataset plus its ground truth.

`generate(SyntheticConfig(buyers=2000, seed=1), "out/")` writes the contract tables
(`items`, `events`, `buyers`, `offers`, `offer_items`, `exposures`, `redemptions`) as
Parquet, and under `out/truth/`:

- `offers.parquet`: for every buyer and every offer valid at the decision time (the
  end of the history) with that buyer's sellers, the true purchase probability and
  expected profit with and without the offer — a policy's true incremental profit is
  the sum of `incremental_profit` over the pairs it issues;
- `exposures.parquet`: for every logged exposure, the buyer's latent stage and the true
  probabilities at the time it was issued;
- `buyers.parquet`: each buyer's latent traits and stage at the decision time.

Buyers are simulated in chunks written one at a time, so memory stays bounded.
"""

from recsys.data.synthetic.generate import GenerationReport, generate
from recsys.data.synthetic.params import STAGES, TOOLS, SyntheticConfig

__all__ = ["STAGES", "TOOLS", "GenerationReport", "SyntheticConfig", "generate"]
