#!/usr/bin/env bash
# The README's first command: installs what is missing (Debian), builds, and chats with
# models/tiny-qwen3 (random weights: its replies are noise, every code path is real).
# On a terminal the chat is interactive (Ctrl-D or /exit ends it); otherwise (CI, a pipe) a short
# scripted conversation is piped in, with --timing showing that each later turn prefills only
# its new tokens. Extra arguments go to `nibble chat` (e.g. --max-tokens 64, --replay).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh
nibble=build/apps/nibble/nibble
model=models/tiny-qwen3
if [ -t 0 ]; then
  echo "nibble chat --model $model (its replies are noise: random weights). Ctrl-D or /exit ends it."
  exec "$nibble" chat --model "$model" --max-tokens 64 --timing "$@"
fi
printf 'Hello!\nWho are you?\nTell me a short story.\n' |
  "$nibble" chat --model "$model" --max-tokens 32 --timing "$@"
