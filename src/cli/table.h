#pragma once
// Human output for the admin subcommands: rows of text in aligned columns, headers first.
// Cells are printed as given; the caller decides what a missing value looks like.
#include <string>
#include <vector>

namespace keypool::cli {

class Table {
 public:
  explicit Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  // A row shorter than the headers is padded with empty cells; extra cells are dropped.
  void add_row(std::vector<std::string> cells);
  // Columns are left-aligned and separated by two spaces; lines carry no trailing spaces.
  std::string render() const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace keypool::cli
