// `sqlx::migrate!("../sql")` embeds the migrations at build time, but a proc macro cannot tell
// cargo that a new file appeared in the folder: rebuild whenever `sql/` changes.
fn main() {
    println!("cargo:rerun-if-changed=../sql");
}
