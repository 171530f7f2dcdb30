// libedit's readline-compatible API (Debian: libedit-dev), used by the chat REPL.
#include <stdio.h>
#include <editline/readline.h>

// libedit's settings are C globals, which Swift 6 refuses to write from Swift; set them here.
// catch_signals 0: libedit installs no signal handlers of its own (the REPL has one for SIGINT).
static inline void spool_editline_configure(int (*getc_function)(FILE *)) {
    rl_catch_signals = 0;
    rl_getc_function = getc_function;
}
