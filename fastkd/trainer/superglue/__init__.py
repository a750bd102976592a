"""SuperGLUE tasks (BoolQ, CB, COPA, RTE, WiC, WSC, MultiRC) in the GLUE task registry."""
