"""ops: what runs beside the worker for people: the demo, the SMTP sink, the board as pictures.

Owns `settlewatch demo` (`demo`: the local stack, the worker, the simulator and findings in the
terminal), a real SMTP server that keeps mails as files (`smtpsink`, `settlewatch
smtp-sink`), `settlewatch pictures` (`pictures`: every Grafana panel drawn from Prometheus
into PNG files) and the configuration reference generator (`configref`: docs/configuration.md
from the code). It may import every room below it (`live`, `audit`, `sim`, `wire`, `core`);
never `bench` or the CLI.
"""
