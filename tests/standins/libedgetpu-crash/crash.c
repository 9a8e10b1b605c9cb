/* TEST DOUBLE for Coral's libedgetpu.so.1 that takes its process down with SIGSEGV when it is
   loaded, as the pairing of Coral's apt libedgetpu with some TFLite runtimes was reported to do
   on Bookworm. Built by tests/model/test_edgetpu_process.py with the system C compiler. */
#include <signal.h>

__attribute__((constructor)) static void crash_on_load(void) { raise(SIGSEGV); }
