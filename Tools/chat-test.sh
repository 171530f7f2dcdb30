#!/usr/bin/env bash
# Tests `spool chat` as users and scripts drive it: piped stdin (one turn per line, plain replies,
# /stats showing that the second turn reuses the first from the KV cache) and a real terminal under
# tmux (a reply stopped with Ctrl-C keeps the session, Ctrl-C at the prompt clears the line, /exit
# quits, history is written to the state folder). Prints 'N passed, N failed'.
set -uo pipefail
cd "$(dirname "$0")/.."
SPOOL=${SPOOL_BIN:-.build/release/spool}
M=$(Tools/fetch-model.sh)
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
tmp=$(mktemp -d)
trap 'tmux kill-session -t spool-chat-test 2>/dev/null; rm -rf "$tmp"' EXIT

# --- piped ---
printf 'What is the capital of France?\n/stats\nAnd of Italy?\n/stats\n' \
  | "$SPOOL" chat -m "$M" --temperature 0 -n 24 >"$tmp/out" 2>"$tmp/err"
code=$?
[ $code = 0 ] && ok "piped chat exits 0" || bad "piped chat exit $code: $(cat "$tmp/err")"
replies=$(grep -c . "$tmp/out")
[ "$replies" -ge 2 ] && ok "piped chat prints the replies" || bad "expected 2 replies, got $replies lines: $(cat "$tmp/out")"
grep -qi paris "$tmp/out" && ok "first reply mentions Paris" || bad "no Paris in: $(cat "$tmp/out")"
second=$(grep '^last turn' "$tmp/err" | sed -n 2p)
echo "     $second"
reused=$(echo "$second" | sed -E 's/.*, ([0-9]+) reused.*/\1/')
prompt=$(echo "$second" | sed -E 's/last turn: prompt ([0-9]+) tokens.*/\1/')
if [ -n "$reused" ] && [ "$reused" -gt 0 ] && [ $((prompt - reused)) -lt 20 ]; then
  ok "second turn prefilled only $((prompt - reused)) new tokens ($reused reused)"
else
  bad "second turn did not reuse the cache: $second"
fi
printf '/set temperature 0\n/save %s\n' "$tmp/conv.json" | "$SPOOL" chat -m "$M" >/dev/null 2>"$tmp/err2"
grep -q '"turns"' "$tmp/conv.json" 2>/dev/null && ok "/save writes the conversation" || bad "/save: $(cat "$tmp/err2")"

# --- pseudo-terminal under tmux ---
if ! command -v tmux >/dev/null; then
  bad "tmux is not installed"
else
  # -J joins lines the 160-column pane wrapped (a reply can wrap inside "[stopped]"); it also keeps
  # trailing spaces, which the sed drops so that '^>$' still matches an empty prompt line.
  pane() { tmux capture-pane -p -J -t spool-chat-test -S -200 | sed 's/[[:space:]]*$//'; }
  waitfor() {  # waitfor PATTERN SECONDS
    for _ in $(seq 1 $((${2} * 10))); do pane | grep -q -- "$1" && return 0; sleep 0.1; done
    return 1
  }
  tmux new-session -d -s spool-chat-test -x 160 -y 50 \
    "XDG_STATE_HOME=$tmp/state $SPOOL chat -m $M --temperature 0.9 --seed 1 -n 400; echo CHAT-EXITED-\$?; sleep 30"
  waitfor '^>' 60 && ok "prompt appears" || bad "no prompt: $(pane)"
  tmux send-keys -t spool-chat-test "Write a very long story about a dragon who learns to bake bread." Enter
  sleep 2
  tmux send-keys -t spool-chat-test C-c
  waitfor '\[stopped\]' 20 && ok "Ctrl-C stops the reply" || bad "reply not stopped: $(pane)"
  waitfor '^>$' 10 && ok "prompt returns after Ctrl-C" || bad "no prompt after Ctrl-C: $(pane)"
  tmux send-keys -t spool-chat-test "half-typed line"
  sleep 0.3
  tmux send-keys -t spool-chat-test C-c
  waitfor 'half-typed line\^C' 5 && ok "Ctrl-C at the prompt clears the line" || bad "Ctrl-C at the prompt: $(pane)"
  tmux send-keys -t spool-chat-test "/stats" Enter
  waitfor '^> /stats' 10 && ok "the cleared text is not sent" || bad "cleared text sent: $(pane)"
  waitfor 'context: ' 10 && ok "/stats after a stopped reply" || bad "/stats: $(pane)"
  tmux send-keys -t spool-chat-test "/exit" Enter
  waitfor 'CHAT-EXITED-0' 10 && ok "/exit quits with status 0" || bad "/exit: $(pane)"
  grep -q "dragon" "$tmp/state/spool/history" 2>/dev/null && ok "history written to \$XDG_STATE_HOME/spool/history" \
    || bad "no history file in $tmp/state/spool"
  echo "----- terminal transcript -----"; pane | sed '/^$/d' | head -40; echo "-------------------------------"
fi
echo "chat-test: $pass passed, $fail failed"
[ $fail = 0 ]
