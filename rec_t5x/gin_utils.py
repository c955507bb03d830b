"""Command-line flags and gin parsing shared by the train / eval / infer binaries.

The flags are T5X's: repeated `--gin_file`, `--gin_bindings`, `--gin_search_paths`, and the
shorthand `--gin.NAME=VALUE` (rewritten to `--gin_bindings=NAME = VALUE`), plus
`--coordinator_address`, `--process_count` and `--process_index` for `jax.distributed`.

Gin errors are turned into one `ConfigError` message naming the flag, file or binding at fault;
`run` prints it without a traceback from inside gin. Two mistakes gin itself accepts silently are
caught here: binding a macro that no gin file defines or uses (a typo such as
`--gin.TRAIN_STEP=10`) and leaving a `%gin.REQUIRED` value unset.
"""
import difflib
import logging
import os
import pathlib
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from absl import app
from absl import flags
from absl import logging as absl_logging
import gin

if not hasattr(gin, "parse_config_files_and_bindings"):
  raise ImportError(
      f"`import gin` found {getattr(gin, '__file__', gin)!r}, not the gin-config package: a folder "
      "named gin/ with an __init__.py on sys.path (e.g. the current directory) shadows it. Remove "
      "that __init__.py (gin files need none) or run from another directory.")



def _tolerate_namespace_packages_in_gin_includes() -> None:
  """Lets gin fall back to its search paths when an include's folder is a namespace package.

  gin-config 0.5.0 first tries every `include 'a/b.gin'` as a resource of a Python package `a`
  (`gin.resource_reader`). When the working directory holds a plain folder `a/` (for example the
  `runs/` model directories that training creates), `importlib.util.find_spec('a')` returns a
  namespace package whose `origin` is None, and gin's existence check crashes with a TypeError
  instead of answering "no", so the include fails without trying the search paths. This wraps that
  one existence check so such a folder counts as "not a package resource"; nothing else changes.
  """
  from gin import config as gin_config  # pylint: disable=g-import-not-at-top
  from gin import resource_reader  # pylint: disable=g-import-not-at-top

  def exists(config_path: str) -> bool:
    try:
      return resource_reader.system_path_file_exists(config_path)
    except TypeError:  # A namespace package (no origin): not a packaged gin file.
      return False

  readers = gin_config._FILE_READERS  # pylint: disable=protected-access
  for i, (reader, check) in enumerate(readers):
    if check is resource_reader.system_path_file_exists:
      readers[i] = (reader, exists)


_tolerate_namespace_packages_in_gin_includes()

PACKAGE_ROOT = pathlib.Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent
GIN_DIR = REPO_ROOT / "gin"

_GIN_FLAG_RE = re.compile(r"^--gin\.([^=]+)=(.*)$", re.DOTALL)
_MACRO_BINDING_RE = re.compile(r"^\s*([A-Za-z_]\w*)\s*=")
_MACRO_DEF_RE = re.compile(r"^([A-Za-z_]\w*) = ", re.MULTILINE)
_IMPORT_RE = re.compile(r"^(from \S+ import \S+|import \S+)( as \S+)?$")
_REQUIRED_RE = re.compile(r"^(\S+) = %gin\.REQUIRED\s*$", re.MULTILINE)


def default_search_paths() -> list[str]:
  """The current directory, the repo's gin/ folder and the folder holding the package."""
  paths = [".", str(GIN_DIR), str(REPO_ROOT)]
  return [p for i, p in enumerate(paths) if p not in paths[:i]]


flags.DEFINE_multi_string(
    "gin_file", [], "Gin file to parse (repeatable); relative paths are looked up in "
    "--gin_search_paths, e.g. experiments/ml100k_tiny_rec_all.gin.")
flags.DEFINE_multi_string(
    "gin_bindings", [], "Gin binding (repeatable), e.g. 'TRAIN_STEPS = 100'. "
    "--gin.NAME=VALUE is shorthand for --gin_bindings='NAME = VALUE'.")
flags.DEFINE_list(
    "gin_search_paths", default_search_paths(),
    "Comma-separated folders where gin files and their includes are looked up.")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0 for jax.distributed (multi-process runs only).")
flags.DEFINE_integer("process_count", None, "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_index", None, "This process's index (with --coordinator_address).")

FLAGS = flags.FLAGS


class ConfigError(ValueError):
  """A configuration mistake reported to the user as one message (no gin traceback)."""


def rewrite_gin_args(argv: Sequence[str]) -> list[str]:
  """Rewrites T5X's `--gin.NAME=VALUE` shorthand into `--gin_bindings=NAME = VALUE`.

  Args:
    argv: command line, program name first.

  Returns:
    The command line with every shorthand replaced (other arguments unchanged).

  Raises:
    ConfigError: for `--gin.NAME` without `=VALUE`.
  """
  out = []
  for arg in argv:
    match = _GIN_FLAG_RE.match(arg)
    if match:
      out.append(f"--gin_bindings={match.group(1)} = {match.group(2)}")
    elif arg.startswith("--gin.") and arg != "--gin.":
      raise ConfigError(f"{arg!r}: expected --gin.NAME=VALUE, e.g. --gin.TRAIN_STEPS=100")
    else:
      out.append(arg)
  return out


def flags_parser(argv: Sequence[str]) -> list[str]:
  """absl `flags_parser` for `app.run`: accepts the `--gin.NAME=VALUE` shorthand."""
  try:
    return FLAGS(rewrite_gin_args(argv))
  except ConfigError as e:
    _exit_with_message(argv[0] if argv else "rec_t5x", e)
  except flags.Error as e:
    _exit_with_message(argv[0] if argv else "rec_t5x", e)


def _exit_with_message(program: str, error: Exception) -> None:
  print(f"{os.path.basename(program)}: configuration error: {error}", file=sys.stderr)
  sys.exit(2)


def _defined_macros() -> set[str]:
  return set(_MACRO_DEF_RE.findall(gin.config_str()))


def _check_macro_bindings(bindings: Sequence[str]) -> None:
  """Refuses a binding of a macro that no parsed file defines or references (likely a typo)."""
  text = gin.config_str()
  defined = _defined_macros()
  for binding in bindings:
    match = _MACRO_BINDING_RE.match(binding)
    if not match:
      continue
    name = match.group(1)
    if name in defined or re.search(rf"%{name}\b", text):
      continue
    close = difflib.get_close_matches(name, sorted(defined), n=3)
    hint = f"did you mean {close}?" if close else f"defined macros: {sorted(defined)}"
    raise ConfigError(f"binding {binding.strip()!r}: no gin file defines or uses macro {name!r} "
                      f"({hint})")


def _import_header() -> str:
  """The import lines of the parsed files, so bindings can use their aliases (`train_script.train`).

  Gin scopes `import x as y` to the file it appears in; repeating the imports in front of each
  command-line binding lets `--gin.train_script.train.eval_period=5` mean what it means in a file.
  """
  lines = [l for l in gin.config_str().splitlines() if _IMPORT_RE.match(l)]
  return "".join(l + "\n" for l in lines)


def _resolve(path: str, search_paths: Sequence[str]) -> str:
  """The first existing `search_path/path` (or `path` itself when absolute)."""
  if os.path.isabs(path):
    candidates = [path]
  else:
    candidates = [os.path.join(p, path) for p in search_paths]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return os.path.abspath(candidate)
  raise ConfigError(f"--gin_file={path}: not found (looked in {list(search_paths)}); "
                    "set --gin_search_paths or give an absolute path")


class _DropGinPathNotFound(logging.Filter):
  """Drops gin's "Path not found" log lines while a search path is being tried.

  Gin looks up every include first as a Python package resource (package "gin", which is
  gin-config itself, for our `gin/...` paths) and logs an error for each miss before trying the
  next search path, so a successful parse would otherwise print spurious errors.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.pathname.endswith("resource_reader.py")
                and str(record.msg).startswith("Path not found"))


def _parse_file(path: str) -> None:
  try:
    gin.parse_config_file(path)
  except (OSError, ValueError, SyntaxError, ImportError, AttributeError, TypeError, NameError) as e:
    raise ConfigError(f"--gin_file={path}: {e}") from e


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str] = (),
              search_paths: Sequence[str] | None = None) -> None:
  """Parses gin files, then bindings (later ones override earlier ones), like T5X.

  Args:
    gin_files: gin files, absolute or relative to a search path.
    gin_bindings: bindings such as "TRAIN_STEPS = 100" or "train_script.train.eval_period = 5".
    search_paths: folders for files and includes (default: `default_search_paths()`).

  Raises:
    ConfigError: for a missing file, an unknown configurable / parameter / import, a syntax error,
      or a bound macro that no file defines or uses.
  """
  search_paths = default_search_paths() if search_paths is None else list(search_paths)
  for path in search_paths:
    if path not in gin.config._LOCATION_PREFIXES:  # pylint: disable=protected-access
      gin.add_config_file_search_path(path)
  files = [_resolve(path, search_paths) for path in gin_files]
  quiet = _DropGinPathNotFound()
  logging.getLogger().addFilter(quiet)
  try:
    for path in files:
      _parse_file(path)
    _check_macro_bindings(gin_bindings)
    header = _import_header()
    for binding in gin_bindings:
      try:
        gin.parse_config(header + binding)
      except (ValueError, SyntaxError, ImportError, AttributeError, TypeError, NameError) as e:
        raise ConfigError(f"--gin_bindings={binding!r}: {e}") from e
  finally:
    logging.getLogger().removeFilter(quiet)


def check_required() -> None:
  """Raises ConfigError listing every value still bound to `%gin.REQUIRED`.

  (Gin passes an opaque sentinel for an unset `%gin.REQUIRED` under dynamic registration, so the
  binaries check before calling the configured function.)
  """
  missing = _REQUIRED_RE.findall(gin.config_str())
  if missing:
    flags_hint = " ".join(f"--gin.{m}=..." for m in missing if "." not in m)
    raise ConfigError(f"required gin values are not set: {missing}"
                      + (f" (e.g. {flags_hint})" if flags_hint else ""))


def parse_gin_flags() -> None:
  """Parses the gin files and bindings given on the command line and checks required values."""
  if not FLAGS.gin_file:
    raise ConfigError("no --gin_file given: pass e.g. --gin_file=experiments/ml100k_tiny_rec_all.gin")
  parse_gin(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_paths)
  check_required()


def initialize_distributed() -> None:
  """Starts JAX's distributed runtime (`rec_t5x.distributed.initialize`) when the flags are given.

  Raises:
    ConfigError: when only some of the three distributed flags are given.
  """
  given = {"coordinator_address": FLAGS.coordinator_address,
           "process_count": FLAGS.process_count, "process_index": FLAGS.process_index}
  if all(v is None for v in given.values()):
    return
  missing = [k for k, v in given.items() if v is None]
  if missing:
    raise ConfigError(f"multi-process runs need all of --coordinator_address, --process_count and "
                      f"--process_index; missing {['--' + m for m in missing]}")
  from rec_t5x import distributed  # Imported late so flag parsing stays cheap.
  distributed.initialize(FLAGS.coordinator_address, FLAGS.process_count, FLAGS.process_index)


def write_config(model_dir: str | os.PathLike, name: str = "config.gin") -> pathlib.Path:
  """Writes the parsed gin config (`gin.config_str()`) to `model_dir/name` and returns the path."""
  path = pathlib.Path(model_dir) / name
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(gin.config_str())
  return path


def run(main: Callable[[Sequence[str]], None],
        main_functions: Mapping[str, Callable[..., Any]] | None = None) -> None:
  """Runs a binary's `main` under absl with the gin shorthand and one-line config errors.

  Args:
    main: the binary's `main(argv)`.
    main_functions: functions the gin files reach as `__main__.<name>` (T5X's
      `import __main__ as train_script`). Under `python -m rec_t5x.train` they are already there;
      a console script's `__main__` is its wrapper, so they are added to it.

  Library INFO logs (orbax writes dozens of lines per checkpoint) would bury the progress lines,
  so the default verbosity is WARNING (absl's `app.run` would raise it to INFO); `--verbosity=0`
  brings INFO back.
  """
  main_module = sys.modules["__main__"]
  for name, fn in (main_functions or {}).items():
    if getattr(main_module, name, None) is not fn:
      setattr(main_module, name, fn)

  def wrapped(argv):
    if not FLAGS["verbosity"].present:
      absl_logging.set_verbosity(absl_logging.WARNING)
    try:
      main(argv)
    except ConfigError as e:
      _exit_with_message(argv[0], e)
  app.run(wrapped, flags_parser=flags_parser)
