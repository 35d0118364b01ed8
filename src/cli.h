/*
 * cli.h: the subcommands of the `baton` program. Each takes the arguments after
 * its own name (argv[0] is the subcommand) and returns the process exit status.
 * main.c only dispatches; each command lives with the module it exercises.
 */
#ifndef BATON_CLI_H
#define BATON_CLI_H

int cmd_check(int argc, char **argv);    /* cli.c */
int cmd_explain(int argc, char **argv);  /* cli.c */
int cmd_serve(int argc, char **argv);    /* server.c */
int cmd_audit(int argc, char **argv);    /* audit_cli.c: verify, keygen */
int cmd_sign_url(int argc, char **argv); /* signurl_cli.c */

#endif
